"""What the model is told: the persona with its facts filled in, and the user's history.

``build_instructions`` fills the persona's ``{context}``, ``{profile}`` and ``{datetime}``
placeholders (knowledge passages, the user's profile, São Paulo time); ``load_history``
reads the user's last answered turns from OUR database (requests use store=false).
"""
from __future__ import annotations

import re
from collections import defaultdict

from sqlalchemy import select

from app.assistant.formatting import truncate
from app.assistant.reply_mode import REPLY_MODE_LABELS
from app.localtime import WEEKDAYS_PT, now_local, to_local
from app.models import TURN_ANSWERED, TURN_TEAM, Message, Turn
from app.turn import Passage, UserSnapshot

HISTORY_TURNS = 8
HISTORY_MAX_CHARS = 6000
HISTORY_ITEM_MAX_CHARS = 1500
CONTEXT_PASSAGE_MAX_CHARS = 1200
CONTEXT_MAX_CHARS = 6000
PROFILE_NAME_MAX_CHARS = 80

_PLACEHOLDER = re.compile(r"\{(context|profile|datetime)\}")


def build_instructions(persona: str, passages: list[Passage], user: UserSnapshot, by_voice: bool = False) -> str:
    """The persona with its placeholders filled; one pass, so filled text is never re-read."""
    values = {
        "context": format_passages(passages),
        "profile": format_profile(user, by_voice),
        "datetime": format_datetime(),
    }
    text = _PLACEHOLDER.sub(lambda match: values[match.group(1)], persona)
    # A persona edited without some placeholder still gets the facts, after its own text.
    missing = [key for key in values if "{" + key + "}" not in persona]
    if missing:
        text = text.rstrip() + "\n\n" + "\n\n".join(values[key] for key in missing) + "\n"
    return text


# Where the persona's facts were, the stable instructions say where to find them.
FACTS_POINTER = ("(Os trechos da base de conhecimento, o que sabemos sobre esta pessoa e a data e hora "
                 "atuais vêm na mensagem de contexto logo antes da mensagem dela.)")
_SECTION = re.compile(r"^## .*$", re.M)


def split_persona(persona: str) -> tuple[str, str]:
    """(the persona without its facts, the template of its facts).

    The facts (``{context}``, ``{profile}``, ``{datetime}``) change with every message; the
    rest never does. Kept apart, the rest opens every request identically, so OpenAI's prompt
    cache serves it. The facts' template is the persona section that holds the placeholders
    (``## Context``); without one, the placeholders themselves.
    """
    headings = [m.start() for m in _SECTION.finditer(persona)] + [len(persona)]
    for start, end in zip(headings, headings[1:]):
        section = persona[start:end]
        if _PLACEHOLDER.search(section):
            title, _, body = section.partition("\n")
            return persona[:start] + title + "\n\n" + FACTS_POINTER + "\n\n" + persona[end:], body.strip()
    template = "\n\n".join("{" + key + "}" for key in ("context", "profile", "datetime"))
    return _PLACEHOLDER.sub("", persona).rstrip() + "\n\n" + FACTS_POINTER + "\n", template


def turn_facts(template: str, passages: list[Passage], user: UserSnapshot, by_voice: bool = False) -> str:
    """The facts of this message (passages, profile, time), filled into the persona's template."""
    return build_instructions(template, passages, user, by_voice).strip()


def format_passages(passages: list[Passage]) -> str:
    if not passages:
        return "(nenhum trecho da base de conhecimento foi encontrado para esta mensagem)"
    blocks: list[str] = []
    used = 0
    for number, passage in enumerate(passages, start=1):
        title = " — ".join(part for part in (passage.source, passage.heading) if part)
        block = f"[{number}] {title}\n{truncate(passage.text, CONTEXT_PASSAGE_MAX_CHARS)}"
        if used + len(block) > CONTEXT_MAX_CHARS and blocks:
            break
        blocks.append(block)
        used += len(block)
    return "\n\n".join(blocks)


def format_profile(user: UserSnapshot, by_voice: bool = False) -> str:
    name = " ".join((user.name or "").split())[:PROFILE_NAME_MAX_CHARS] or "ainda não sabemos"
    first = to_local(user.first_seen_at).strftime("%d/%m/%Y") if user.first_seen_at else "hoje"
    mode = REPLY_MODE_LABELS.get(user.reply_mode, user.reply_mode)
    return (
        f"- Nome: {name}\n"
        f"- Primeiro contato: {first}\n"
        f"- Mensagens enviadas por esta pessoa até agora: {user.message_count}\n"
        f"- Preferência de resposta: {mode}\n"
        f"- Esta resposta vai em: {'áudio (escreva como quem fala)' if by_voice else 'texto'}"
    )


def format_datetime() -> str:
    now = now_local()
    return f"{WEEKDAYS_PT[now.weekday()]}, {now.strftime('%d/%m/%Y %H:%M')}"


# ---- history ----------------------------------------------------------------------------

TEAM_PREFIX = "[Equipe Endrigo]"


def load_history(db, user_id: int, turn_id: int) -> list[dict]:
    """This user's last turns as user/assistant items, oldest first, within the size cap.

    Besides the bot's answered turns: what the user wrote while a person handled the
    conversation (turns with no bot reply), and the team's messages (team turns) as
    assistant items marked ``[Equipe Endrigo]``, so the bot knows what the team promised.
    """
    with db.session() as session:
        turns = session.execute(
            select(Turn.id, Turn.status, Turn.reply_text, Turn.reply_kind)
            .where(Turn.user_id == user_id, Turn.id < turn_id, Turn.status.in_((TURN_ANSWERED, TURN_TEAM)))
            .order_by(Turn.id.desc())
            .limit(HISTORY_TURNS)
        ).all()
        if not turns:
            return []
        rows = session.execute(
            select(Message.turn_id, Message.body, Message.transcription)
            .where(Message.turn_id.in_([t.id for t in turns]), Message.direction == "in",
                   Message.user_id == user_id)
            .order_by(Message.created_at, Message.id)
        ).all()
    said: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        said[row.turn_id].extend(part.strip() for part in (row.body, row.transcription) if part and part.strip())
    blocks: list[list[dict]] = []
    used = 0
    for turn in turns:  # newest first: the oldest are the ones dropped
        user_text = truncate("\n".join(said.get(turn.id, [])), HISTORY_ITEM_MAX_CHARS)
        if turn.status == TURN_TEAM:
            words = truncate(turn.reply_text or "", HISTORY_ITEM_MAX_CHARS) or f"(enviou um arquivo: {turn.reply_kind})"
            reply = f"{TEAM_PREFIX} {words}"
        else:
            reply = truncate(turn.reply_text or "", HISTORY_ITEM_MAX_CHARS)
        block = []
        if user_text:
            block.append({"role": "user", "content": user_text})
        if reply:
            block.append({"role": "assistant", "content": reply})
        if not block or (turn.status == TURN_ANSWERED and not turn.reply_text and not user_text):
            continue
        size = len(user_text) + len(reply)
        if used + size > HISTORY_MAX_CHARS:
            break
        used += size
        blocks.append(block)
    return [item for block in reversed(blocks) for item in block]
