"""The answer stage: the answer text.

With an OpenAI key: Endrigo's persona on the Responses API (``store=false``; instructions
and history from app/assistant/prompt.py on every call) with at most MAX_TOOL_ROUNDS rounds
of the six function tools (app/assistant/tools.py), within a time budget; Markdown becomes
WhatsApp formatting; Portuguese fallbacks for empty, refused or incomplete output. Without a
key (offline mode): app/assistant/offline.py. A turn with nothing to answer (only notices)
has no answer text; the send stage then sends the notices alone.

Provider errors arrive classified (``GatewayError``; ``turn_error`` maps them): invalid
credentials and refused requests fail the turn at once, everything else is retried by the
inbox later.
"""
from __future__ import annotations

import re
import time
from typing import Any

from app.assistant import offline
from app.assistant.formatting import to_whatsapp
from app.assistant.prompt import load_history, split_persona, turn_facts
from app.assistant.reply_mode import voice_reply_due
from app.assistant.tools import ToolContext, execute, request_human_handoff, tool_definitions, update_user_profile
from app.clients.errors import GatewayError, turn_error
from app.knowledge import load_persona
from app.pipeline import notices
from app.pipeline.context import TurnContext

MAX_TOOL_ROUNDS = 4
ENCRYPTED_REASONING = "reasoning.encrypted_content"
# The output items the tool loop sends back as input: the ones it understands. Our own
# function_call_output items are added by _run_tools. Anything else (a built-in tool's call such
# as web_search_call, a type added to the API later) is dropped with a warning.
REPLAYED_TYPES = ("function_call", "message", "reasoning")
# The content parts of an assistant message that the API accepts back as input.
MESSAGE_PARTS = ("output_text", "refusal")
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


def run(ctx: TurnContext) -> None:
    if ctx.answer_text is not None:
        return
    if not ctx.user_text:
        if not ctx.notices:
            ctx.answer_text = notices.EMPTY_TURN
        return
    if ctx.services.openai.available:
        ctx.answer_text = answer_turn(ctx)
    else:
        ctx.answer_text = offline_answer(ctx)


def offline_answer(ctx: TurnContext) -> str:
    """The offline responder's reply, with the conversation so far and the tools it may use."""
    tool_ctx = ToolContext.for_turn(ctx)
    history = load_history(ctx.services.db, ctx.user.id, ctx.turn_id)

    def open_handoff(reason: str) -> bool:
        started = time.perf_counter()
        result = request_human_handoff(tool_ctx, {"reason": reason})
        ctx.tool_calls.append({"name": "request_human_handoff", "arguments": {"reason": reason}, "ok": True,
                               "error": None, "ms": round((time.perf_counter() - started) * 1000, 1),
                               "round": 0})
        ctx.log.info("offline: handoff %s", "already open" if result["already_open"] else "opened")
        return bool(result["already_open"])

    def prefer_voice() -> None:
        update_user_profile(tool_ctx, {"name": None, "reply_mode": "audio"})

    turn = offline.OfflineTurn(
        name=ctx.user.name,
        earlier_replies=[item["content"] for item in history if item["role"] == "assistant"],
        open_handoff=open_handoff,
        prefer_voice=prefer_voice if ctx.services.tts.available else None,
        subsections=ctx.services.knowledge.subsections,
    )
    return offline.answer(ctx.user_text, ctx.passages, turn)


def answer_turn(ctx: TurnContext) -> str:
    """The answer text for the turn (WhatsApp formatting), or raise Retryable/PermanentTurnError."""
    tool_ctx = ToolContext.for_turn(ctx)
    deadline = time.monotonic() + answer_budget_seconds(ctx)
    instructions, facts_template = split_persona(load_persona(ctx.settings.documents_dir))
    items: list[dict] = load_history(ctx.services.db, ctx.user.id, ctx.turn_id)
    facts_at = len(items)  # this message's facts go right before it: what precedes them stays cacheable
    items.append({"role": "developer", "content": ""})
    items.append({"role": "user", "content": ctx.user_text})

    response = None
    warned: set[str] = set()  # item types already reported as dropped in this turn
    for round_number in range(1, MAX_TOOL_ROUNDS + 2):
        seconds_left = deadline - time.monotonic()
        last_call = round_number > MAX_TOOL_ROUNDS or (round_number > 1 and seconds_left < NEW_ROUND_MIN_SECONDS)
        if last_call and seconds_left < MIN_CALL_SECONDS:
            ctx.log.warning("answer: out of time after %d model calls", round_number - 1)
            return _succeeded(ctx, _fallback(tool_ctx, FALLBACK_OUT_OF_TIME))
        # Rebuilt every round: a tool may have changed the profile (a name, a reply preference).
        items[facts_at] = {"role": "developer", "content": turn_facts(
            facts_template, ctx.passages, tool_ctx.user, by_voice=_reply_by_voice(ctx))}
        request = build_request(ctx, instructions, items, allow_tools=not last_call, seconds_left=seconds_left)
        response = _call_model(ctx, tool_ctx, request)
        if response is None:  # failed after a handoff was opened: the user must still hear it
            return handoff_reply(tool_ctx)
        calls = [item for item in response.output if getattr(item, "type", None) == "function_call"]
        if not calls or last_call:
            break
        replayed, dropped = replayable_items(
            response.output, reasoning_included=ENCRYPTED_REASONING in (request.get("include") or ()))
        _warn_dropped(ctx, dropped, warned)
        items.extend(replayed)
        items.extend(_run_tools(ctx, tool_ctx, calls, round_number))
    return _succeeded(ctx, final_text(ctx, tool_ctx, response))


def answer_budget_seconds(ctx: TurnContext) -> float:
    return min(ANSWER_BUDGET_MAX_SECONDS, max(ANSWER_BUDGET_MIN_SECONDS, ctx.remaining_budget()))


def _succeeded(ctx: TurnContext, text: str) -> str:
    ctx.services.provider_health.ok("openai")
    return text


# ---- the request ------------------------------------------------------------------------

def build_request(ctx: TurnContext, instructions: str, items: list[dict], *, allow_tools: bool,
                  seconds_left: float) -> dict[str, Any]:
    """One Responses API request: the stable part first and identical between calls.

    ``instructions`` (the persona without its facts) and the tools never change, and
    ``prompt_cache_key`` keeps one user's calls on the same cache: OpenAI's prompt cache
    then serves the prefix; the facts of the message travel in ``input`` (a developer item).
    """
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
            "instructions": instructions,
            "tools": tool_definitions(),
            "input": list(items),
            "prompt_cache_key": f"endrigo-user-{ctx.user.id}",
        },
    }
    if supports_encrypted_reasoning(model):
        # With store=False the API keeps no reasoning items; the encrypted copy lets us resend them.
        request["include"] = [ENCRYPTED_REASONING]
    return request


def supports_encrypted_reasoning(model: str) -> bool:
    """Reasoning models (o-series, gpt-5 family, not the -chat variants); others refuse the include."""
    name = model.lower()
    return bool(re.match(r"^(o\d|gpt-5)", name)) and "chat" not in name


def _reply_by_voice(ctx: TurnContext) -> bool:
    """Whether this answer will probably be spoken (the speak stage decides; the model writes for it)."""
    return voice_reply_due(ctx.user.reply_mode, ctx.has_voice_note) and ctx.services.tts.available


# ---- the loop -----------------------------------------------------------------------------

def _call_model(ctx: TurnContext, tool_ctx: ToolContext, request: dict):
    """One model call; SDK errors become turn errors (or None once a handoff is open)."""
    try:
        ctx.usage["model_calls"] = ctx.usage.get("model_calls", 0) + 1
        response = ctx.abandonable(lambda: ctx.services.openai.respond(**request))
        _count_usage(ctx, response)
        return response
    except GatewayError as exc:
        ctx.services.provider_health.error("openai", exc.reason)
        if tool_ctx.handoff_opened:
            # A retry would find the handoff open and stay silent; confirm the handoff now.
            ctx.log.warning("answer failed after a handoff was opened (%s): confirming the handoff", exc.reason)
            return None
        raise turn_error(exc, "answer") from exc


def replayable_items(output: list, *, reasoning_included: bool) -> tuple[list[dict], list[str]]:
    """``(items, dropped)``: the response's output items the next call may carry as input, and
    the types of those left out because the loop does not understand them.

    Kept: function calls, assistant messages (with the content parts the API takes back) and
    reasoning items, the latter only when the request included their encrypted content and they
    carry it (store=False keeps nothing server-side). When a reasoning item is left out, the ids
    that point at it go too, since the API refuses a function call whose reasoning item is missing.
    """
    items: list[dict] = []
    dropped: list[str] = []
    dropped_reasoning = False
    for item in output:
        # warnings=False: the SDK's models hold unknown types as they came, and say so noisily.
        data = item.to_dict(exclude_none=True, warnings=False) if hasattr(item, "to_dict") else dict(item)
        kind = data.get("type")
        if kind not in REPLAYED_TYPES:
            dropped.append(str(kind))
            continue
        if kind == "reasoning" and not (reasoning_included and data.get("encrypted_content")):
            dropped_reasoning = True
            continue
        if kind == "message":
            parts = data.get("content") or []
            known = [part for part in parts if isinstance(part, dict) and part.get("type") in MESSAGE_PARTS]
            dropped += [f"message content {part.get('type') if isinstance(part, dict) else '?'}"
                        for part in parts if part not in known]
            if not known:
                continue
            data["content"] = known
        items.append(data)
    if dropped_reasoning:
        for data in items:
            if data.get("type") in ("function_call", "message"):
                data.pop("id", None)
    return items, dropped


def _warn_dropped(ctx: TurnContext, dropped: list[str], warned: set[str]) -> None:
    """One warning per item type per turn (the type comes from the provider: kept short)."""
    for kind in dropped:
        if kind not in warned:
            warned.add(kind)
            ctx.log.warning("answer: output item type %r not understood; not sent back to the model", kind[:60])


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
    return handoff_reply(tool_ctx) if tool_ctx.handoff_opened else text


def handoff_reply(tool_ctx: ToolContext) -> str:
    """What the user hears about an open handoff when the model could not say it: the honest
    sentence the handoff gave (BUSINESS_HOURS), else the generic one."""
    message = getattr(tool_ctx, "handoff_message", None)
    return f"Certo! {message}" if message else FALLBACK_HANDOFF


def _count_usage(ctx: TurnContext, response) -> None:
    """Add a response's token usage to the turn's (input, cached input, output)."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return
    details = getattr(usage, "input_tokens_details", None)
    for key, value in (("input_tokens", getattr(usage, "input_tokens", 0)),
                       ("cached_tokens", getattr(details, "cached_tokens", 0) if details else 0),
                       ("output_tokens", getattr(usage, "output_tokens", 0))):
        ctx.usage[key] = ctx.usage.get(key, 0) + int(value or 0)
