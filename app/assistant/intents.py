"""What a message is, when the offline responder cannot ask a model: intent rules as data.

``INTENTS`` is a table of Portuguese phrases per intent, written as people type them on
WhatsApp. A message and every phrase are normalised the same way before matching (lower
case, accents, punctuation and repeated letters folded, WhatsApp abbreviations such as
"vc" or "obg" expanded), and a phrase matches as a run of whole words anywhere in the
message. Rules are checked in the table's order, so a more specific intent listed first
wins ("você é humano?" is a question about the bot, "quero um humano" a request).

Small-talk intents (greeting, thanks, goodbye, acknowledgement) only describe the whole
message when nothing else is left once their phrases are removed: "Oi, quais serviços vocês
oferecem?" is a greeting plus a question, and the question is what needs answering.
Phrases in ``whole`` count only when they are all that is left of the message ("atendente!").
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import product

from app.knowledge.text import ABBREVIATIONS, fold, tokenize


@dataclass(frozen=True)
class Intent:
    name: str
    phrases: tuple[str, ...]
    small_talk: bool = False
    whole: tuple[str, ...] = ()


# ---- the table ------------------------------------------------------------------------------

_HANDOFF_ASKS = ("falar com", "conversar com", "quero", "queria", "gostaria de", "preciso de", "me passa para",
                 "me passa pra", "passa para", "passa pra", "me transfere para", "me transfere pra", "transfere pra",
                 "transfere para", "chama", "chamar", "me coloca com", "me encaminha para", "me encaminha pra")
_HANDOFF_WHO = ("uma pessoa", "alguem", "um atendente", "uma atendente", "atendente", "um humano", "humano",
                "um ser humano", "alguem da equipe", "a equipe", "o endrigo", "o dono", "o responsavel",
                "uma pessoa de verdade", "gente de verdade", "o suporte", "o gerente")

INTENTS: tuple[Intent, ...] = (
    Intent("identity", (
        "quem e voce", "quem e voces", "quem esta falando", "com quem estou falando", "com quem eu estou falando",
        "voce e um robo", "voce e robo", "voce e um bot", "voce e bot", "e um robo", "e um bot", "e robo",
        "voce e humano", "voce e uma pessoa", "voce e gente", "voce e de verdade", "voce e real",
        "voce e o endrigo", "e o endrigo que esta falando", "qual seu nome", "qual o seu nome", "como voce se chama",
        "o que voce e", "voce e uma ia", "voce e uma inteligencia artificial", "e inteligencia artificial",
        "voce e o chatgpt", "e o chatgpt", "se apresenta", "se apresente",
    )),
    Intent("handoff", (
        *(f"{ask} {who}" for ask, who in product(_HANDOFF_ASKS, _HANDOFF_WHO)),
        "atendimento humano", "pessoa de verdade", "ser humano", "um humano por favor",
        "nao quero falar com robo", "nao quero falar com bot", "chega de robo",
    ), whole=("atendente", "humano", "pessoa", "uma pessoa", "suporte", "atendimento")),
    Intent("voice_reply", (
        "manda em audio", "manda um audio", "mande um audio", "mande em audio", "me manda audio",
        "manda audio", "envia um audio", "envia em audio", "envie um audio", "responde em audio",
        "responda em audio", "responder em audio", "resposta em audio", "respostas em audio",
        "responde por audio", "responda por audio", "responder por audio", "resposta por audio",
        "responde com audio", "fala em audio", "fala comigo em audio", "grava um audio", "grave um audio",
        "gravar um audio", "grava audio", "voz do endrigo", "me responde falando", "quero ouvir sua voz",
    )),
    Intent("voice_input", (
        "mandar audio", "mandar um audio", "mandando audio", "mando audio", "mando um audio", "enviar audio",
        "enviar um audio", "entende audio", "entender audio", "entende audios", "ouve audio", "ouvir audio",
        "ouvir meu audio", "escuta audio", "escutar audio", "escutar meu audio", "transcreve", "transcrever",
        "transcricao", "mensagem de voz", "mensagens de voz", "audio em vez de escrever",
    )),
    Intent("goodbye", (
        "tchau", "tchauzinho", "xau", "ate logo", "ate mais", "ate a proxima", "ate amanha", "ate breve",
        "ate depois", "falou", "flw", "bom fim de semana", "boa semana",
    ), small_talk=True),
    Intent("thanks", (
        "obrigado", "obrigada", "muito obrigado", "muito obrigada", "brigado", "brigada", "obrigadao",
        "valeu", "agradeco", "grato", "grata", "thanks", "gratidao",
    ), small_talk=True),
    Intent("greeting", (
        "oi", "oii", "oie", "ola", "opa", "e ai", "eai", "salve", "hello", "hi", "hey",
        "bom dia", "boa tarde", "boa noite", "tudo bem", "tudo bom", "tudo certo", "tudo joia", "como vai",
        "como voce esta", "como vai voce", "de boa",
    ), small_talk=True),
    Intent("ack", (
        "ok", "okay", "certo", "entendi", "entendido", "beleza", "show", "perfeito", "otimo", "legal",
        "combinado", "esta bom", "esta otimo", "joia", "massa", "top", "sim", "blz", "isso", "ah",
    ), small_talk=True),
)

# Which greeting to answer with: the first of these phrases found in the message, else "Oi".
GREETING_REPLIES = (("bom dia", "Bom dia"), ("boa tarde", "Boa tarde"), ("boa noite", "Boa noite"))
# Asked how we are: answered before anything else.
HOW_ARE_YOU = ("tudo bem", "tudo bom", "tudo certo", "tudo joia", "como vai", "como voce esta", "como vai voce")


# ---- matching ---------------------------------------------------------------------------

_NOT_WORD = re.compile(r"[^a-z0-9]+")
_REPEATS = re.compile(r"([a-z])\1{2,}")


def normalise(text: str) -> str:
    """Folded words separated by single spaces: "Obg!!! Vc é demaaais" -> "obrigado voce e demais"."""
    words = _NOT_WORD.sub(" ", _REPEATS.sub(r"\1", fold(text or ""))).split()
    return " ".join(part for word in words for part in ABBREVIATIONS.get(word, word).split())


def _contains(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {text} "


def _remove(text: str, phrase: str) -> str:
    return f" {text} ".replace(f" {phrase} ", " ").strip()


@dataclass
class Reading:
    """What a message is: the intents found, and what is left of it once small talk is removed."""

    intents: list[str] = field(default_factory=list)
    rest: str = ""  # normalised text without the small-talk phrases
    normalised: str = ""

    @property
    def main(self) -> str | None:
        """The intent to act on: the first task intent, else the first small talk when nothing is
        left, else None (a question for the knowledge base)."""
        for name in self.intents:
            if not _INTENT_BY_NAME[name].small_talk:
                return name
        if self.intents and not tokenize(self.rest):
            return self.intents[0]
        return None

    def has(self, name: str) -> bool:
        return name in self.intents

    def says(self, phrase: str) -> bool:
        return _contains(self.normalised, normalise(phrase))


_INTENT_BY_NAME = {intent.name: intent for intent in INTENTS}
# Phrases normalised the way messages are, longest first: "muito obrigado" before "obrigado".
_RULES = tuple(
    (intent, tuple(sorted({normalise(p) for p in intent.phrases}, key=len, reverse=True)),
     frozenset(normalise(p) for p in intent.whole))
    for intent in INTENTS
)


def read(text: str) -> Reading:
    """Read one message (or a coalesced turn) against ``INTENTS``."""
    normalised = normalise(text)
    reading = Reading(normalised=normalised)
    rest = normalised
    for intent, phrases, _ in _RULES:
        if intent.small_talk:
            found = [phrase for phrase in phrases if _contains(rest, phrase)]
            for phrase in found:
                rest = _remove(rest, phrase)
        else:
            found = [phrase for phrase in phrases if _contains(normalised, phrase)][:1]
        if found:
            reading.intents.append(intent.name)
    reading.rest = rest
    if not any(not _INTENT_BY_NAME[name].small_talk for name in reading.intents):
        leftover = " ".join(tokenize(rest))
        for intent, _, whole in _RULES:
            if leftover in whole or rest in whole:
                reading.intents.insert(0, intent.name)
                break
    return reading
