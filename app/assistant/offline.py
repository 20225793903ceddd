"""The offline responder: a short, honest conversation in Portuguese without an OpenAI key.

What the message is comes from the intent table (app/assistant/intents.py): greetings,
thanks and goodbyes are answered in kind; "quem é você?" gets who the bot is; a request for
a person opens a real handoff (through ``OfflineTurn.open_handoff``, the same
``request_human_handoff`` tool the model calls); asking for audio gets an honest answer about
what works offline. Anything else is a question for the knowledge base: the reply is the
best section's text, already reflowed by the chunker, made WhatsApp-formatted, without its
heading path, cut at a sentence or list item; a section with sub-sections lists their titles
("Quais serviços vocês oferecem?" lists the services of servicos.md).

The conversation so far (``OfflineTurn.earlier_replies``, the bot's answered turns, oldest
first) keeps it from sounding like a form: the user's name is used once per conversation,
the introduction is made once, and a reply does not end with the line that ended one of the
last replies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from app.assistant.formatting import to_whatsapp
from app.assistant.intents import GREETING_REPLIES, HOW_ARE_YOU, Reading, read
from app.turn import Passage

# A WhatsApp answer, not a document: the section is cut at a sentence or list item past this.
MAX_ANSWER_CHARS = 700
# How many of the latest replies a closing line must not repeat.
CLOSING_MEMORY = 3

INTRODUCTION = (
    "Sou o assistente virtual da Endrigo Digital. Posso te contar sobre os nossos serviços, "
    "como trabalhamos e o horário de atendimento, ou chamar uma pessoa da equipe."
)
IDENTITY = (
    "Sou o assistente virtual da Endrigo Digital: falo em nome do Endrigo e da equipe, mas não sou "
    "uma pessoa. Agora estou funcionando no modo básico, sem inteligência artificial: respondo por "
    "texto com as informações oficiais da empresa. Quando quiser, uma pessoa da equipe assume a conversa."
)
HANDOFF_OPENED = (
    "Certo! Já avisei a equipe e uma pessoa vai continuar o seu atendimento aqui mesmo, neste número. "
    "É só aguardar um pouquinho."
)
HANDOFF_ALREADY_OPEN = (
    "Seu pedido já está com a equipe: uma pessoa vai continuar o atendimento aqui mesmo. "
    "É só aguardar um pouquinho."
)
HANDOFF_UNAVAILABLE = (
    "Não consegui chamar a equipe agora. Pode tentar de novo daqui a pouco?"
)
VOICE_OFFLINE = (
    "Agora estou no modo básico e não consigo responder em áudio nem ouvir áudios: por enquanto, só texto. "
    "Mas por escrito eu te conto sobre os serviços, como trabalhamos e o horário de atendimento, "
    "ou chamo uma pessoa da equipe."
)
VOICE_REPLY_ON = (
    "Combinado, a partir de agora te respondo em áudio. Só não consigo ouvir os seus áudios no momento: "
    "pode me escrever as perguntas."
)
VOICE_INPUT_OFFLINE = (
    "Agora estou no modo básico, sem transcrição: ainda não consigo ouvir os seus áudios. "
    "Pode me escrever a pergunta? Respondo por texto sobre os serviços, como trabalhamos e o horário "
    "de atendimento, ou chamo uma pessoa da equipe."
)
THANKS = "Por nada! Se surgir outra dúvida, é só mandar mensagem."
GOODBYE = "Até mais! Quando precisar, é só chamar aqui."
ACK = "Combinado! Se quiser saber mais alguma coisa, estou por aqui."
HOW_ARE_YOU_REPLY = "Tudo ótimo por aqui, obrigado por perguntar!"
NOT_FOUND = (
    "Não encontrei isso nas informações que tenho aqui.",
    "Não achei nada sobre isso na minha base.",
)
NOT_FOUND_NEXT = "Pode perguntar de outro jeito? Se preferir, chamo uma pessoa da equipe."
SUBSECTIONS_CLOSING = "Quer saber mais sobre algum desses?"
CLOSINGS = (
    "Quer saber mais alguma coisa?",
    "Posso ajudar com mais alguma coisa?",
    "Se quiser, chamo uma pessoa da equipe para continuar com você.",
    "Ficou alguma dúvida?",
)


@dataclass
class OfflineTurn:
    """What the responder may know and do besides reading the message (all optional)."""

    name: str | None = None
    earlier_replies: Sequence[str] = ()
    # Opens a handoff with a reason; returns True when one was already open.
    open_handoff: Callable[[str], bool] | None = None
    # Switches the user to voice replies; None when no voice is available (no TTS).
    prefer_voice: Callable[[], None] | None = None
    # Titles of the sections directly under a section (source, heading path).
    subsections: Callable[[str, str], list[str]] | None = None


def answer(user_text: str, passages: list[Passage], turn: OfflineTurn | None = None) -> str:
    """The reply to ``user_text`` (WhatsApp formatting)."""
    turn = turn or OfflineTurn()
    reading = read(user_text)
    intent = reading.main
    opener = _opener(reading, turn)
    if intent == "handoff":
        body = _handoff(user_text, turn)
    elif intent == "identity":
        body = IDENTITY
    elif intent == "voice_reply":
        body = _voice_reply(turn)
    elif intent == "voice_input":
        body = VOICE_INPUT_OFFLINE
    elif intent in ("goodbye", "thanks", "ack", "greeting"):
        return _small_talk(reading, turn, opener)
    else:
        body = _from_knowledge(passages, turn)
    return "\n\n".join(part for part in (opener, body) if part)


# ---- the conversation -------------------------------------------------------------------

def _first_name(turn: OfflineTurn) -> str | None:
    words = (turn.name or "").split()
    return words[0] if words else None


def _name_used(turn: OfflineTurn) -> bool:
    name = _first_name(turn)
    if not name:
        return True
    pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
    return any(pattern.search(reply or "") for reply in turn.earlier_replies)


def _opener(reading: Reading, turn: OfflineTurn) -> str:
    """Greets back when greeted, or at the start of a conversation; the name goes in once."""
    if not reading.has("greeting") and turn.earlier_replies:
        return ""
    greeting = next((reply for phrase, reply in GREETING_REPLIES if reading.says(phrase)), "Oi")
    name = None if _name_used(turn) else _first_name(turn)
    line = f"{greeting}, {name}!" if name else f"{greeting}!"
    if reading.has("greeting") and any(reading.says(phrase) for phrase in HOW_ARE_YOU):
        line += " " + HOW_ARE_YOU_REPLY
    return line


def _small_talk(reading: Reading, turn: OfflineTurn, opener: str) -> str:
    if reading.has("goodbye"):
        name = None if _name_used(turn) else _first_name(turn)
        return GOODBYE.replace("Até mais!", f"Até mais, {name}!") if name else GOODBYE
    if reading.has("thanks"):
        return THANKS
    if reading.has("greeting"):
        if turn.earlier_replies:
            return f"{opener} Em que mais posso ajudar?"
        return f"{opener} {INTRODUCTION} Como posso ajudar?"
    return ACK


def _last_lines(turn: OfflineTurn) -> set[str]:
    return {(reply or "").strip().rsplit("\n", 1)[-1].strip() for reply in list(turn.earlier_replies)[-CLOSING_MEMORY:]}


def _closing(turn: OfflineTurn, choices: Sequence[str]) -> str:
    """The first of ``choices`` that did not end one of the latest replies ("" if all did)."""
    used = _last_lines(turn)
    return next((choice for choice in choices if choice not in used), "")


# ---- intents that act -------------------------------------------------------------------

def _handoff(user_text: str, turn: OfflineTurn) -> str:
    if turn.open_handoff is None:
        return HANDOFF_UNAVAILABLE
    reason = "Pediu para falar com uma pessoa (modo offline): " + " ".join(user_text.split())[:300]
    return HANDOFF_ALREADY_OPEN if turn.open_handoff(reason) else HANDOFF_OPENED


def _voice_reply(turn: OfflineTurn) -> str:
    if turn.prefer_voice is None:
        return VOICE_OFFLINE
    turn.prefer_voice()
    return VOICE_REPLY_ON


# ---- answers from the knowledge base ----------------------------------------------------

def _from_knowledge(passages: list[Passage], turn: OfflineTurn) -> str:
    if not passages:
        first = _closing(turn, NOT_FOUND) or NOT_FOUND[0]
        return f"{first} {NOT_FOUND_NEXT}"
    best = passages[0]
    text = section_text(best.text)
    titles = turn.subsections(best.source, best.heading) if turn.subsections else []
    if titles:
        text += "\n\n" + "\n".join(f"• {title}" for title in titles)
        closing = _closing(turn, (SUBSECTIONS_CLOSING, *CLOSINGS))
    else:
        closing = _closing(turn, CLOSINGS)
    return "\n\n".join(part for part in (text, closing) if part)


_SENTENCE_END = re.compile(r"[.!?…:](?=\s|$)")
_LIST_LINE = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")


def section_text(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    """A chunk's text as a WhatsApp answer: formatted, starting at a sentence, at most about
    ``limit`` characters, cut after a whole paragraph, list item or sentence."""
    text = to_whatsapp(text.strip())
    if text[:1].islower():  # a later chunk of a long section opens with the overlap, mid-sentence
        end = _SENTENCE_END.search(text)
        if end and end.end() < len(text) - 1:
            text = text[end.end():].lstrip()
    if len(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    for line in text.split("\n"):
        if used + len(line) <= limit:
            kept.append(line)
            used += len(line) + 1
            continue
        if not _LIST_LINE.match(line):  # a paragraph: keep its sentences that fit
            room = limit - used
            ends = [m.end() for m in _SENTENCE_END.finditer(line) if m.end() <= room]
            if ends:
                kept.append(line[: ends[-1]])
        break
    if not any(line.strip() for line in kept):  # one endless first sentence: cut it at a word
        cut = text[:limit].rsplit(" ", 1)[0]
        return cut.rstrip(",;:") + "…"
    return "\n".join(kept).strip()
