"""The send policy: may this part go to this user now, and how? Checked right before every send.

``check_before_send`` is called by the outbox (app/channels/outbox.py) once per part, after
the part's row is written and before the provider is called, so what it decides holds for
a turn already in flight, a late retry, a holding message, an apology or an operator reply:

- the user opted out (SAIR, PARAR, ...): nothing is sent; the row is ``not_sent`` with the
  reason. Only the opt-out confirmation itself (``OPT_OUT_CONFIRMATION_INDEX``) goes out;
- WhatsApp's 24-hour customer-service window is closed (the user's last inbound message,
  ``users.last_seen_at``, is older than 24 hours): free text is not sent. With
  TWILIO_FALLBACK_CONTENT_SID the part goes as that Content template (its text in variable
  ``1``); without it the row is ``held`` with the reason, for operators to see.

``reply_refusal`` is the same decision for an operator about to reply (Portuguese reason,
or None when the reply may go). The simulator channel has no window; opt-out applies to it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass

from app.db import utcnow
from app.localtime import to_local
from app.models import HELD, NOT_SENT, User
from app.turn import OutboundPart, UserSnapshot

WINDOW = dt.timedelta(hours=24)
# The outbox's index of the opt-out confirmation: the one message an opted-out user gets.
OPT_OUT_CONFIRMATION_INDEX = 1002
TEMPLATE_VARIABLE_CHARS = 1000


@dataclass(frozen=True)
class Verdict:
    """``part`` to send (maybe turned into a template), or a refusal: ``status`` and ``reason``."""

    part: OutboundPart | None
    status: str | None = None
    reason: str | None = None

    @property
    def refused(self) -> bool:
        return self.part is None


@dataclass(frozen=True)
class _State:
    channel: str
    opted_out_at: dt.datetime | None
    last_inbound_at: dt.datetime | None


def _state(services, user_id: int) -> _State | None:
    with services.db.session() as session:
        row = session.get(User, user_id)
        if row is None:
            return None
        return _State(row.channel, row.opted_out_at, row.last_seen_at)


def window_closed(last_inbound_at: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """WhatsApp's rule: free-form messages only within 24 hours of the user's last message."""
    return last_inbound_at is None or (now or utcnow()) - last_inbound_at >= WINDOW


def check_before_send(services, user: UserSnapshot, part: OutboundPart) -> Verdict:
    """Decide for one part, right before it is sent (reads the user's row each time)."""
    state = _state(services, user.id)
    if state is None:  # erased meanwhile: there is nobody to send to
        return Verdict(None, NOT_SENT, "the user's data was erased")
    if state.opted_out_at is not None and part.index != OPT_OUT_CONFIRMATION_INDEX:
        return Verdict(None, NOT_SENT, f"the user opted out at {_when(state.opted_out_at)}")
    if state.channel != "whatsapp" or part.content_sid or not window_closed(state.last_inbound_at):
        return Verdict(part)
    return outside_window(services, part, _window_reason(state.last_inbound_at))


def outside_window(services, part: OutboundPart, reason: str) -> Verdict:
    """The window is closed (by our clock, or Twilio said 63016): the template, else hold."""
    content_sid = services.settings.twilio_fallback_content_sid
    text = part.body if part.kind == "text" else None
    if content_sid and text:
        return Verdict(template_part(part, content_sid, text))
    why = "no TWILIO_FALLBACK_CONTENT_SID configured" if not content_sid else "a voice note cannot go as a template"
    return Verdict(None, HELD, f"{reason}; held: {why}")


def template_part(part: OutboundPart, content_sid: str, text: str) -> OutboundPart:
    """The part as a Content template whose variable 1 is its text on one line (WhatsApp
    refuses line breaks, tabs and runs of spaces in variables)."""
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) > TEMPLATE_VARIABLE_CHARS:
        flat = flat[:TEMPLATE_VARIABLE_CHARS - 1].rstrip() + "…"
    # ``body`` stays: it is what the outbox records; the channel sends only the template.
    return dataclasses.replace(part, body=text, media_url=None, media_type=None, kind="template",
                               content_sid=content_sid, content_variables={"1": flat})


def _window_reason(last_inbound_at: dt.datetime | None) -> str:
    if last_inbound_at is None:
        return "outside WhatsApp's 24-hour window (the user never wrote)"
    return f"outside WhatsApp's 24-hour window (last message from the user at {_when(last_inbound_at)})"


def _when(value: dt.datetime) -> str:
    local = to_local(value)
    return local.strftime("%d/%m/%Y %H:%M") + " (São Paulo)" if local else "?"


def reply_refusal(services, user_id: int) -> str | None:
    """Why an operator's reply to ``user_id`` cannot go out now (Portuguese), or None.

    For the operator reply path: call it before accepting the reply, show the text to the
    operator; the outbox checks again at the moment of sending (``check_before_send``).
    """
    state = _state(services, user_id)
    if state is None:
        return "Contato não encontrado (os dados podem ter sido apagados)."
    if state.opted_out_at is not None:
        return (f"Este contato pediu para não receber mais mensagens em {_when(state.opted_out_at)}. "
                "A resposta não será enviada até que ele mande VOLTAR.")
    if (state.channel == "whatsapp" and window_closed(state.last_inbound_at)
            and not services.settings.twilio_fallback_content_sid):
        last = _when(state.last_inbound_at) if state.last_inbound_at else "nunca"
        return ("A janela de 24 horas do WhatsApp está fechada (última mensagem do contato: "
                f"{last}) e não há modelo de mensagem configurado (TWILIO_FALLBACK_CONTENT_SID). "
                "Mensagens livres só podem ir depois que o contato escrever de novo.")
    return None
