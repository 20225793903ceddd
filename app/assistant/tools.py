"""The six function tools the model may call, and the one entry point that runs them.

Each tool is a strict JSON-schema definition for the Responses API (``additionalProperties:
false``, every property required, optional values typed ``[..., "null"]``) plus a handler
``handler(tool_ctx, args) -> dict``. The registry ``TOOLS`` maps a name to both.

``execute(tool_ctx, name, arguments_json)`` never raises: the model's arguments are
parsed, normalised and validated, and any problem (malformed JSON, a bad e-mail, an
unknown tool, a database hiccup) comes back as ``{"error": "..."}`` for the model to
read and recover from. Errors are written in Portuguese because the model relays them.

Tools act on the turn's user only: the user id comes from the turn, never from the
model's arguments, so one user's conversation can never read or change another's data.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import select

from app.assistant.formatting import truncate
from app.assistant.handoff import open_handoff
from app.assistant.reply_mode import REPLY_MODES
from app.db import utcnow
from app.localtime import WEEKDAYS_PT, now_local, to_local
from app.models import Lead, User
from app.turn import UserSnapshot

if TYPE_CHECKING:  # pragma: no cover - the services sit above the assistant
    from app.services import Services

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 80
MAX_INTEREST_CHARS = 1000
MAX_REASON_CHARS = 500
MAX_QUERY_CHARS = 500
MAX_EMAIL_CHARS = 254
MAX_PASSAGE_CHARS = 800
SEARCH_RESULTS = 4
# A second capture_lead within this window completes the first lead instead of duplicating
# it (the model learns the e-mail later; a retried turn runs its tools again).
LEAD_MERGE_WINDOW = dt.timedelta(hours=24)


class ToolArgumentError(ValueError):
    """The model's arguments are unusable; the message goes back to the model."""


@dataclass
class ToolContext:
    """What a tool may touch: the services and the turn's own user (a snapshot it keeps current)."""

    services: "Services"
    user: UserSnapshot
    turn_id: int | None = None
    handoff_opened: bool = False
    # The honest "what happens next" of the handoff this turn opened (app/assistant/handoff.py).
    handoff_message: str | None = None

    @classmethod
    def for_turn(cls, ctx) -> "ToolContext":
        return cls(services=ctx.services, user=ctx.user, turn_id=ctx.turn_id)

    @property
    def settings(self):
        return self.services.settings


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    handler: Callable[[ToolContext, dict], dict]

    def definition(self) -> dict:
        """The Responses API function-tool object."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters, "strict": True}


# ---- argument helpers -------------------------------------------------------------------

def _schema(properties: dict) -> dict:
    """A strict object schema: every property required, nothing else allowed."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _nullable_string(description: str, enum: tuple[str, ...] | None = None) -> dict:
    schema: dict = {"type": ["string", "null"], "description": description}
    if enum:
        schema["enum"] = [*enum, None]
    return schema


def _string(description: str) -> dict:
    return {"type": "string", "description": description}


def _clean_text(value: Any, field: str, max_chars: int, *, required: bool) -> str | None:
    """Trimmed single-spaced text, or None; rejects non-strings, blanks when required, and overlong values."""
    if value is None:
        if required:
            raise ToolArgumentError(f"o campo '{field}' é obrigatório")
        return None
    if not isinstance(value, str):
        raise ToolArgumentError(f"o campo '{field}' deve ser texto")
    text = " ".join(value.split())
    if not text:
        if required:
            raise ToolArgumentError(f"o campo '{field}' não pode ficar vazio")
        return None
    if len(text) > max_chars:
        raise ToolArgumentError(f"o campo '{field}' passa de {max_chars} caracteres")
    return text


_NAME_CHARS = re.compile(r"^[^\W\d_]+(?:[ '’.\-]+[^\W\d_]+)*\.?$")


def normalize_person_name(value: Any, field: str = "name") -> str | None:
    """A person's name: letters with spaces, apostrophes, hyphens or dots between them; ≤ 80 chars."""
    name = _clean_text(value, field, MAX_NAME_CHARS, required=False)
    if name is None:
        return None
    name = unicodedata.normalize("NFC", name)
    if not _NAME_CHARS.match(name):
        raise ToolArgumentError(f"'{name}' não parece um nome de pessoa (use só letras, espaços, hífen ou apóstrofo)")
    return name


# Local part: dot-separated atoms; domain: dot-separated labels and a 2+ letter TLD.
_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


def normalize_email(value: Any) -> str | None:
    """Lower-cased, trimmed e-mail, or None; ToolArgumentError when it is not one."""
    email = _clean_text(value, "email", MAX_EMAIL_CHARS, required=False)
    if email is None:
        return None
    email = email.lower().removeprefix("mailto:")
    if " " in email or not _EMAIL.match(email):
        raise ToolArgumentError(f"e-mail inválido: '{email}'")
    return email


def normalize_phone(value: Any) -> str | None:
    """E.164 (``+5511987654321``), or None.

    Brazilian numbers are accepted as people write them: ``(11) 98765-4321``,
    ``11987654321``, ``011 98765-4321``, ``+55 11 98765-4321``, ``whatsapp:+55...``. A
    number with ``+`` and another country code is kept when its length is plausible.
    """
    raw = _clean_text(value, "phone", 40, required=False)
    if raw is None:
        return None
    raw = raw.lower().removeprefix("whatsapp:").strip()
    if re.search(r"[^\d\s()+.\-]", raw) or raw.count("+") > 1 or ("+" in raw and not raw.startswith("+")):
        raise ToolArgumentError(f"telefone inválido: '{raw}'")
    digits = re.sub(r"\D", "", raw)
    if raw.startswith("+"):
        return _international(digits, raw)
    if digits.startswith("00"):  # international dialling prefix written instead of "+"
        return _international(digits[2:], raw)
    if digits.startswith("0"):  # trunk prefix of a national call: 0 + DDD + number
        digits = digits[1:]
    if len(digits) in (12, 13) and digits.startswith("55"):
        return _brazilian(digits[2:], raw)
    return _brazilian(digits, raw)


def _international(digits: str, raw: str) -> str:
    if digits.startswith("55"):
        return _brazilian(digits[2:], raw)
    if not re.fullmatch(r"[1-9]\d{7,14}", digits):
        raise ToolArgumentError(f"telefone inválido: '{raw}'")
    return "+" + digits


def _brazilian(national: str, raw: str) -> str:
    """DDD (two digits, 11-99, no zero) + 9-digit mobile (starts with 9) or 8-digit landline (2-5)."""
    valid = re.fullmatch(r"[1-9]{2}9\d{8}", national) or re.fullmatch(r"[1-9]{2}[2-5]\d{7}", national)
    if not valid:
        raise ToolArgumentError(
            f"telefone inválido: '{raw}' (use DDD + número, por exemplo (11) 98765-4321)"
        )
    return "+55" + national


# ---- handlers ---------------------------------------------------------------------------

def search_knowledge(tc: ToolContext, args: dict) -> dict:
    query = _clean_text(args.get("query"), "query", MAX_QUERY_CHARS, required=True)
    passages = tc.services.knowledge.search(query, k=SEARCH_RESULTS)
    if not passages:
        return {"passages": [], "note": "nada encontrado na base de conhecimento"}
    return {"passages": [
        {"source": p.source, "heading": p.heading, "text": truncate(p.text, MAX_PASSAGE_CHARS)} for p in passages
    ]}


def get_user_profile(tc: ToolContext, args: dict) -> dict:
    with tc.services.db.session() as session:
        user = session.get(User, tc.user.id)
        if user is None:
            raise ToolArgumentError("perfil não encontrado")
        return profile_of(user)


def update_user_profile(tc: ToolContext, args: dict) -> dict:
    name = normalize_person_name(args.get("name"))
    reply_mode = _reply_mode(args.get("reply_mode"))
    if name is None and reply_mode is None:
        raise ToolArgumentError("informe 'name' ou 'reply_mode' para atualizar")
    with tc.services.db.session() as session:
        user = session.get(User, tc.user.id)
        if user is None:
            raise ToolArgumentError("perfil não encontrado")
        if name is not None:
            user.learned_name = name
        if reply_mode is not None:
            user.reply_mode = reply_mode
        profile = profile_of(user)
    # Later calls of this turn (instructions, the voice-or-text decision) see the change at once.
    if name is not None:
        tc.user.name = name
    if reply_mode is not None:
        tc.user.reply_mode = reply_mode
    return {"ok": True, "profile": profile}


def _reply_mode(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in REPLY_MODES:
        raise ToolArgumentError("'reply_mode' deve ser 'text', 'audio', 'auto' ou null")
    return value.strip().lower()


def capture_lead(tc: ToolContext, args: dict) -> dict:
    name = _clean_text(args.get("name"), "name", MAX_NAME_CHARS, required=True)
    interest = _clean_text(args.get("interest"), "interest", MAX_INTEREST_CHARS, required=True)
    email = normalize_email(args.get("email"))
    phone = normalize_phone(args.get("phone"))
    since = utcnow() - LEAD_MERGE_WINDOW
    with tc.services.db.session() as session:
        lead = session.scalar(
            select(Lead).where(Lead.user_id == tc.user.id, Lead.created_at >= since).order_by(Lead.id.desc()).limit(1)
        )
        updated = lead is not None
        if lead is None:
            lead = Lead(user_id=tc.user.id, name=name, interest=interest)
            session.add(lead)
        lead.name, lead.interest = name, interest
        lead.email = email or lead.email
        lead.phone = phone or lead.phone
        session.flush()
        saved = {"id": lead.id, "name": lead.name, "interest": lead.interest, "email": lead.email,
                 "phone": lead.phone, "updated_existing": updated}
    return {"ok": True, "lead": saved}


def request_human_handoff(tc: ToolContext, args: dict) -> dict:
    """Open (or find) the user's handoff through the one entry point, app/assistant/handoff.py."""
    reason = _clean_text(args.get("reason"), "reason", MAX_REASON_CHARS, required=True)
    source = "offline" if tc.settings.offline else "model"
    info = open_handoff(tc.services, tc.user.id, reason, source=source)
    tc.handoff_opened = True
    tc.handoff_message = info.user_message
    return {
        "ok": True, "handoff_id": info.id, "already_open": info.already_open,
        "expires_at": to_local(info.expires_at).isoformat(timespec="minutes") if info.expires_at else None,
        # What the user must hear, true to BUSINESS_HOURS; the offline assistant sends it as is.
        "message": info.user_message,
        "instructions": "Avise a pessoa, com estas informações e sem prometer outro prazo: " + info.user_message,
    }


def get_current_datetime(tc: ToolContext, args: dict) -> dict:
    now = now_local()
    return {"iso": now.isoformat(timespec="seconds"), "weekday": WEEKDAYS_PT[now.weekday()],
            "date": now.strftime("%d/%m/%Y"), "time": now.strftime("%H:%M"), "timezone": "America/Sao_Paulo"}


def profile_of(user: User) -> dict:
    """The profile the model may know: this user's name, first contact, count and reply preference."""
    return {
        "name": user.display_name,
        "first_contact": to_local(user.first_seen_at).date().isoformat() if user.first_seen_at else None,
        "message_count": user.message_count,
        "reply_preference": user.reply_mode,
    }


# ---- the registry -----------------------------------------------------------------------

TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool(
        "search_knowledge",
        "Busca trechos na base de conhecimento da Endrigo Digital (serviços, horários, condições, "
        "perguntas frequentes). Use quando os trechos das instruções não bastarem.",
        _schema({"query": _string("O que procurar, em poucas palavras, em português.")}),
        search_knowledge,
    ),
    Tool(
        "get_user_profile",
        "Lê o perfil da pessoa desta conversa: nome, primeiro contato, número de mensagens e "
        "preferência de resposta (texto, áudio ou automática).",
        _schema({}),
        get_user_profile,
    ),
    Tool(
        "update_user_profile",
        "Guarda o nome da pessoa e/ou a preferência de resposta dela. Use null no que não mudou.",
        _schema({
            "name": _nullable_string("Nome pelo qual a pessoa quer ser chamada, ou null."),
            "reply_mode": _nullable_string("text: sempre texto; audio: sempre áudio; auto: áudio quando a "
                                           "pessoa manda áudio; null: não mudar.", REPLY_MODES),
        }),
        update_user_profile,
    ),
    Tool(
        "capture_lead",
        "Registra um contato comercial (lead) quando a pessoa quer contratar, pedir proposta ou orçamento. "
        "Confirme antes nome, interesse e melhor contato.",
        _schema({
            "name": _string("Nome da pessoa ou da empresa."),
            "interest": _string("O que a pessoa procura, em uma frase."),
            "email": _nullable_string("E-mail de contato, ou null."),
            "phone": _nullable_string("Telefone com DDD, por exemplo (11) 98765-4321, ou null."),
        }),
        capture_lead,
    ),
    Tool(
        "request_human_handoff",
        "Passa a conversa para uma pessoa da equipe. Depois disso o assistente fica em silêncio com esta "
        "pessoa até a equipe encerrar o atendimento. Avise a pessoa na resposta.",
        _schema({"reason": _string("Por que a pessoa precisa de atendimento humano, em uma frase.")}),
        request_human_handoff,
    ),
    Tool(
        "get_current_datetime",
        "Data, hora e dia da semana atuais no horário de Brasília.",
        _schema({}),
        get_current_datetime,
    ),
)}


def tool_definitions() -> list[dict]:
    """The ``tools`` parameter of a Responses API request."""
    return [tool.definition() for tool in TOOLS.values()]


@dataclass
class ToolResult:
    """What one call produced: the output for the model, and a record for the dashboard."""

    output: dict
    record: dict

    @property
    def output_json(self) -> str:
        return json.dumps(self.output, ensure_ascii=False, default=str)


def execute(tc: ToolContext, name: str, arguments_json: str | None) -> ToolResult:
    """Run tool ``name`` with the model's JSON arguments; problems become ``{"error": ...}``."""
    started = time.perf_counter()
    args: Any = None
    try:
        args = _parse_arguments(arguments_json)
        tool = TOOLS.get(name)
        if tool is None:
            raise ToolArgumentError(f"ferramenta desconhecida: '{name}'. Disponíveis: {', '.join(TOOLS)}")
        output = tool.handler(tc, args)
        error = None
    except ToolArgumentError as exc:
        output, error = {"error": str(exc)}, str(exc)
    except Exception as exc:  # noqa: BLE001 - a tool failure must reach the model, not end the turn
        log.warning("tool %s failed", name, exc_info=True)
        error = f"falha interna ao executar '{name}' ({type(exc).__name__}); tente de outro jeito"
        output = {"error": error}
    record = {
        "name": name,
        "arguments": args if isinstance(args, dict) else truncate(str(arguments_json or ""), 300),
        "ok": error is None,
        "error": error,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return ToolResult(output=output, record=record)


def _parse_arguments(arguments_json: str | None) -> dict:
    if arguments_json is None or not str(arguments_json).strip():
        return {}
    try:
        args = json.loads(arguments_json)
    except (TypeError, ValueError) as exc:
        raise ToolArgumentError(f"argumentos não são um JSON válido ({exc.__class__.__name__})") from exc
    if not isinstance(args, dict):
        raise ToolArgumentError("os argumentos devem ser um objeto JSON")
    return args


__all__ = [
    "TOOLS", "Tool", "ToolArgumentError", "ToolContext", "ToolResult", "execute", "normalize_email",
    "normalize_person_name", "normalize_phone", "profile_of", "tool_definitions",
]
