"""Stage 5 with OpenAI: Endrigo's persona on the Responses API, with our own function-tool loop.

``answer_turn(ctx)`` returns the WhatsApp-formatted answer for one turn:

1. ``instructions``: documents/persona.md with ``{context}`` (the retrieved passages),
   ``{profile}`` (this user's profile) and ``{datetime}`` (now in America/Sao_Paulo) filled
   in. Sent on every call: instructions are never inherited between calls.
2. ``input``: this user's recent answered turns from OUR database (user text, then our
   reply), bounded by count and size, then the new turn. ``store=False``: OpenAI keeps no
   conversation; our database is the memory.
3. The loop: while the model asks for functions, run them (app/tools.py) and resend the
   accumulated items plus one ``function_call_output`` per call, for at most
   ``MAX_TOOL_ROUNDS`` rounds and within a time budget; then one last call with
   ``tool_choice="none"``, or a Portuguese fallback when no time is left.
4. The final text (``output_text``) goes through app/whatsapp_format.py. An empty answer, a
   refusal or an incomplete response becomes a short Portuguese fallback: never blank.

Provider errors are classified once (``classify_openai_error``): invalid credentials and
refused requests fail the turn at once, everything else is retried by the inbox later.
"""
from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from app.clients.openai_client import classify_openai_error
from app.knowledge import load_persona
from app.localtime import now_local, to_local
from app.models import TURN_ANSWERED, Message, Turn
from app.pipeline.context import Passage, PermanentTurnError, RetryableTurnError, TurnContext, UserSnapshot
from app.pipeline.speak import voice_reply_due
from app.tools import REPLY_MODE_LABELS, WEEKDAYS_PT, ToolContext, execute, tool_definitions
from app.whatsapp_format import to_whatsapp

MAX_TOOL_ROUNDS = 4
HISTORY_TURNS = 8
HISTORY_MAX_CHARS = 6000
HISTORY_ITEM_MAX_CHARS = 1500
CONTEXT_PASSAGE_MAX_CHARS = 1200
CONTEXT_MAX_CHARS = 6000
PROFILE_NAME_MAX_CHARS = 80
# WhatsApp answers are short; the cap also bounds reasoning plus text on reasoning models.
MAX_OUTPUT_TOKENS = 2500

# The answer's time budget: what is left of the turn's promise, but never so little that a
# normal model call cannot finish, nor so much that a user waits forever on a tool loop.
ANSWER_BUDGET_MIN_SECONDS = 10.0
ANSWER_BUDGET_MAX_SECONDS = 20.0
# Another tool round needs a call with tools and then one more to answer.
NEW_ROUND_MIN_SECONDS = 4.0
# Below this, a model call cannot finish: say something useful instead.
MIN_CALL_SECONDS = 2.0

FALLBACK_EMPTY = (
    "Desculpe, não consegui montar uma resposta agora. Pode me perguntar de outro jeito? "
    "Se preferir, chamo alguém da equipe."
)
FALLBACK_REFUSAL = (
    "Desculpe, sobre isso eu não consigo ajudar por aqui. "
    "Posso te ajudar com os serviços da Endrigo Digital ou chamar alguém da equipe."
)
FALLBACK_INCOMPLETE = (
    "Desculpe, minha resposta ficou incompleta. Pode me perguntar de novo, de um jeito mais direto?"
)
FALLBACK_OUT_OF_TIME = (
    "Desculpe a demora! Não consegui concluir sua resposta a tempo. "
    "Pode me mandar a pergunta de novo? Se preferir, chamo alguém da equipe."
)
FALLBACK_HANDOFF = (
    "Certo! Já pedi para uma pessoa da nossa equipe continuar o seu atendimento por aqui. "
    "É só aguardar um pouquinho."
)

_PLACEHOLDER = re.compile(r"\{(context|profile|datetime)\}")


def answer_turn(ctx: TurnContext) -> str:
    """The answer text for the turn (WhatsApp formatting), or raise Retryable/PermanentTurnError."""
    tool_ctx = ToolContext.for_turn(ctx)
    deadline = time.monotonic() + answer_budget_seconds(ctx)
    persona = load_persona(ctx.settings.documents_dir)
    items: list[dict] = load_history(ctx.services.db, ctx.user.id, ctx.turn_id)
    items.append({"role": "user", "content": ctx.user_text})

    response = None
    for round_number in range(1, MAX_TOOL_ROUNDS + 2):
        seconds_left = deadline - time.monotonic()
        last_call = round_number > MAX_TOOL_ROUNDS or (round_number > 1 and seconds_left < NEW_ROUND_MIN_SECONDS)
        if last_call and seconds_left < MIN_CALL_SECONDS:
            ctx.log.warning("answer: out of time after %d model calls", round_number - 1)
            return _succeeded(ctx, _fallback(tool_ctx, FALLBACK_OUT_OF_TIME))
        request = build_request(ctx, persona, items, allow_tools=not last_call, seconds_left=seconds_left)
        response = _call_model(ctx, tool_ctx, request)
        if response is None:  # failed after a handoff was opened: the user must still hear it
            return FALLBACK_HANDOFF
        calls = [item for item in response.output if getattr(item, "type", None) == "function_call"]
        if not calls or last_call:
            break
        items.extend(replayable_items(response.output))
        items.extend(_run_tools(ctx, tool_ctx, calls, round_number))
    return _succeeded(ctx, final_text(ctx, tool_ctx, response))


def answer_budget_seconds(ctx: TurnContext) -> float:
    return min(ANSWER_BUDGET_MAX_SECONDS, max(ANSWER_BUDGET_MIN_SECONDS, ctx.remaining_budget()))


def _succeeded(ctx: TurnContext, text: str) -> str:
    ctx.services.provider_health.ok("openai")
    return text


# ---- the request ------------------------------------------------------------------------

def build_request(ctx: TurnContext, persona: str, items: list[dict], *, allow_tools: bool,
                  seconds_left: float) -> dict[str, Any]:
    """One Responses API request; instructions are rebuilt so a profile change shows at once."""
    model = ctx.settings.openai_model
    request: dict[str, Any] = {
        "model": model,
        "tool_choice": "auto" if allow_tools else "none",
        "store": False,
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        # The SDK's timeout is per attempt; keep each within what is left of the budget.
        "timeout": min(ctx.settings.openai_timeout_seconds, max(MIN_CALL_SECONDS, seconds_left)),
        # These three are plain JSON we built ourselves. Given as typed parameters, the SDK
        # walks every nested item against its TypedDicts on each call (~4 ms a call, see
        # bench/bench_pipeline.py); as extra_body they go to the wire unchanged - same body.
        "extra_body": {
            "instructions": build_instructions(persona, ctx.passages, ctx.user, by_voice=_reply_by_voice(ctx)),
            "input": list(items),
            "tools": tool_definitions(),
        },
    }
    if supports_encrypted_reasoning(model):
        # With store=False the API keeps no reasoning items; the encrypted copy lets us resend them.
        request["include"] = ["reasoning.encrypted_content"]
    return request


def supports_encrypted_reasoning(model: str) -> bool:
    """Reasoning models (o-series, gpt-5 family, not the -chat variants); others refuse the include."""
    name = model.lower()
    return bool(re.match(r"^(o\d|gpt-5)", name)) and "chat" not in name


def _reply_by_voice(ctx: TurnContext) -> bool:
    """Whether this answer will probably be spoken (the speak stage decides; the model writes for it)."""
    return voice_reply_due(ctx) and ctx.services.tts.available


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


def format_passages(passages: list[Passage]) -> str:
    if not passages:
        return "(nenhum trecho da base de conhecimento foi encontrado para esta mensagem)"
    blocks: list[str] = []
    used = 0
    for number, passage in enumerate(passages, start=1):
        title = " — ".join(part for part in (passage.source, passage.heading) if part)
        block = f"[{number}] {title}\n{_truncate(passage.text, CONTEXT_PASSAGE_MAX_CHARS)}"
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

def load_history(db, user_id: int, turn_id: int) -> list[dict]:
    """This user's last answered turns as user/assistant items, oldest first, within the size cap."""
    with db.session() as session:
        turns = session.execute(
            select(Turn.id, Turn.reply_text)
            .where(Turn.user_id == user_id, Turn.id < turn_id, Turn.status == TURN_ANSWERED,
                   Turn.reply_text.is_not(None))
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
    pairs: list[list[dict]] = []
    used = 0
    for turn in turns:  # newest first: the oldest are the ones dropped
        user_text = _truncate("\n".join(said.get(turn.id, [])), HISTORY_ITEM_MAX_CHARS)
        reply = _truncate(turn.reply_text, HISTORY_ITEM_MAX_CHARS)
        if not user_text or not reply:
            continue
        if used + len(user_text) + len(reply) > HISTORY_MAX_CHARS:
            break
        used += len(user_text) + len(reply)
        pairs.append([{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}])
    return [item for pair in reversed(pairs) for item in pair]


# ---- the loop -----------------------------------------------------------------------------

def _call_model(ctx: TurnContext, tool_ctx: ToolContext, request: dict):
    """One model call; SDK errors become turn errors (or None once a handoff is open)."""
    try:
        return ctx.services.openai.respond(**request)
    except Exception as exc:  # noqa: BLE001 - every SDK failure is classified, none escapes raw
        kind, reason = classify_openai_error(exc)
        ctx.services.provider_health.error("openai", reason)
        if tool_ctx.handoff_opened:
            # A retry would find the handoff open and stay silent; confirm the handoff now.
            ctx.log.warning("answer failed after a handoff was opened (%s): confirming the handoff", reason)
            return None
        if kind == "auth":
            raise PermanentTurnError(reason, kind="auth") from exc
        if kind == "retryable":
            raise RetryableTurnError(reason, kind="answer") from exc
        raise PermanentTurnError(reason, kind="answer") from exc


def replayable_items(output: list) -> list[dict]:
    """The response's output items as input items for the next call.

    Reasoning items travel only with their encrypted content (store=False keeps nothing
    server-side); when one lacks it, it is dropped and the ids that point at it go too,
    since the API refuses a function call whose reasoning item is missing.
    """
    items: list[dict] = []
    dropped_reasoning = False
    for item in output:
        data = item.to_dict(exclude_none=True) if hasattr(item, "to_dict") else dict(item)
        if data.get("type") == "reasoning" and not data.get("encrypted_content"):
            dropped_reasoning = True
            continue
        items.append(data)
    if dropped_reasoning:
        for data in items:
            if data.get("type") in ("function_call", "message"):
                data.pop("id", None)
    return items


def _run_tools(ctx: TurnContext, tool_ctx: ToolContext, calls: list, round_number: int) -> list[dict]:
    outputs: list[dict] = []
    for call in calls:
        result = execute(tool_ctx, call.name, call.arguments)
        ctx.tool_calls.append({**result.record, "round": round_number})
        ctx.log.info("tool %s %s in %.0f ms", call.name, "ok" if result.record["ok"] else "error",
                     result.record["ms"])
        outputs.append({"type": "function_call_output", "call_id": call.call_id, "output": result.output_json})
    return outputs


def final_text(ctx: TurnContext, tool_ctx: ToolContext, response) -> str:
    """The answer to send; a short Portuguese fallback when the model gave nothing usable."""
    if response.status == "incomplete":
        reason = getattr(response.incomplete_details, "reason", None)
        ctx.log.warning("answer: incomplete response (%s)", reason)
        return _fallback(tool_ctx, FALLBACK_INCOMPLETE)
    if _refused(response):
        ctx.log.warning("answer: the model refused")
        return _fallback(tool_ctx, FALLBACK_REFUSAL)
    text = to_whatsapp(response.output_text or "")
    if not text.strip():
        ctx.log.warning("answer: empty output (status %s)", response.status)
        return _fallback(tool_ctx, FALLBACK_EMPTY)
    return text


def _refused(response) -> bool:
    for item in response.output:
        if getattr(item, "type", None) != "message":
            continue
        if any(getattr(part, "type", None) == "refusal" for part in item.content or []):
            return True
    return False


def _fallback(tool_ctx: ToolContext, text: str) -> str:
    """Once a handoff is open the user must hear that a person will continue, whatever else failed."""
    return FALLBACK_HANDOFF if tool_ctx.handoff_opened else text


def _truncate(text: str | None, limit: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
