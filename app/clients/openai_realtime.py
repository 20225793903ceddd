"""The only module that uses the OpenAI SDK's Realtime client (speech to speech over a WebSocket).

``RealtimeGateway.run`` does one whole turn on a fresh session: ``session.update`` (persona,
formats, voice, tools), the history as ``conversation.item.create`` messages, the user's
audio as ``input_audio_buffer.append`` chunks, ``commit``, ``response.create``; then it
collects the answer until ``response.done``, running function calls in between (bounded
rounds; the last one is made with ``tool_choice: "none"`` so the model has to answer).

Turn detection is ``server_vad`` with ``create_response: false``: the note is already whole
and silence-trimmed, so we commit and ask for the answer ourselves; letting the server also
answer on its own when it hears the speech stop would start a second, competing response.

Async SDK inside its own event loop, not the sync client: the sync connection's ``recv()``
takes no timeout, so a stalled session could only be ended by closing the socket from a
watchdog thread. With the async client one ``asyncio.timeout`` bounds everything - the
handshake, every send and every receive - and the SDK documents cancelling ``recv()`` as
safe. Each ``run`` calls ``asyncio.run`` in the calling (worker) thread, so it must not be
called from inside a running event loop; the loop costs well under a millisecond next to a
WebSocket handshake.

Every failure is ``RealtimeError(kind, reason)`` with kind in ``REALTIME_ERROR_KINDS``; the
reason is safe to show operators (never the key: the SDK's messages go through ``redact``).
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import openai
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from app.redaction import redact

log = logging.getLogger(__name__)

REALTIME_ERROR_KINDS = frozenset({"connect", "auth", "error_event", "timeout", "closed", "empty_audio"})
RATE = 24_000
DEFAULT_TIMEOUT = 12.0
DEFAULT_CHUNK_MS = 500  # the note is already recorded: big chunks, few events (the service takes up to 15 MB)
DEFAULT_MAX_TOOL_ROUNDS = 4
DEFAULT_TRANSCRIPTION_MODEL = "gpt-transcribe"
DEFAULT_TRANSCRIPT_GRACE = 1.0  # seconds to wait after the answer for the input transcript
# The transcript wait ends this long before the turn's deadline, so that deadline never fires in it.
_DEADLINE_MARGIN = 0.1
# Closing a connection waits for the peer's close frame; a dead peer must not add seconds.
_CLOSE_TIMEOUT = 1.0
_AUTH_ERROR_CODES = frozenset({"invalid_api_key", "invalid_authentication"})
# Keys a Realtime function tool takes; the Responses API's "strict" is not one of them.
_TOOL_KEYS = ("type", "name", "description", "parameters")


class RealtimeError(Exception):
    """A realtime turn failed. ``kind`` is one of REALTIME_ERROR_KINDS; ``reason`` is operator-safe."""

    def __init__(self, kind: str, reason: str):
        if kind not in REALTIME_ERROR_KINDS:
            raise ValueError(f"unknown RealtimeError kind {kind!r}")
        reason = redact(reason)
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass
class RealtimeResult:
    """What one realtime turn produced.

    ``audio`` is PCM16 24 kHz mono (empty in text mode); ``output_transcript`` is what the
    assistant said (the text itself in text mode); ``input_transcript`` is the service's
    transcription of the user's audio, or None when it failed or had not arrived within
    ``transcript_grace`` seconds of the last ``response.done``. ``tool_calls``: one dict per
    call (round, call_id, name, arguments, output). ``timings`` in milliseconds: connect,
    first_audio (after the first ``response.create``), total. ``status``: ``completed``, or
    ``incomplete`` when the service cut the answer short (e.g. max_output_tokens).
    """

    audio: bytes
    output_transcript: str
    input_transcript: str | None
    usage: dict
    tool_calls: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    status: str = "completed"

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / 2 / RATE


class RealtimeGateway:
    """One configured Realtime client; ``run`` is safe to call from several threads at once."""

    def __init__(self, api_key: str, *, model: str, websocket_base_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, transcription_model: str | None = DEFAULT_TRANSCRIPTION_MODEL,
                 max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
                 transcript_grace: float = DEFAULT_TRANSCRIPT_GRACE):
        if not api_key:
            raise ValueError("api_key is required")
        self.model = model
        self.timeout = timeout
        self.transcription_model = transcription_model
        self.max_tool_rounds = max_tool_rounds
        self.transcript_grace = transcript_grace
        self._api_key = api_key
        self._websocket_base_url = websocket_base_url

    def run(self, *, instructions: str, history: list[dict], tools: list[dict], pcm16_24k: bytes, voice: str,
            output: Literal["audio", "text"] = "audio",
            on_tool_call: Callable[[str, dict], str] | None = None,
            chunk_ms: int = DEFAULT_CHUNK_MS, timeout: float | None = None) -> RealtimeResult:
        """One turn: the user's audio (PCM16 24 kHz mono) in, the assistant's answer out.

        ``history``: ``{"role": "user"|"assistant", "content": str}`` items, oldest first.
        ``tools``: function tools (Responses-style dicts are accepted; keys Realtime does not
        take are dropped). ``on_tool_call(name, arguments) -> output string`` runs each
        function call; an exception in it becomes an error output for the model.
        ``timeout`` (default: the gateway's) bounds the whole turn; time spent in
        ``on_tool_call`` counts, but a running tool is not interrupted (it runs in this
        thread). Raises RealtimeError; ValueError for input the service would refuse.
        """
        if output not in ("audio", "text"):
            raise ValueError("output must be 'audio' or 'text'")
        if len(pcm16_24k) < RATE * 2 // 10:
            raise ValueError("pcm16_24k must hold at least 100 ms of audio (the service refuses less)")
        if len(pcm16_24k) % 2:
            raise ValueError("pcm16_24k must hold whole 16-bit samples")
        turn = _Turn(self, instructions=instructions, history=history, tools=tools, pcm=pcm16_24k, voice=voice,
                     output=output, on_tool_call=on_tool_call, chunk_ms=chunk_ms,
                     timeout=self.timeout if timeout is None else timeout)
        return asyncio.run(turn.run())

    def session_config(self, *, instructions: str, tools: list[dict], voice: str,
                       output: Literal["audio", "text"]) -> dict:
        """The ``session`` object sent in ``session.update``."""
        audio_input: dict[str, Any] = {
            "format": {"type": "audio/pcm", "rate": RATE},
            "turn_detection": {"type": "server_vad", "create_response": False, "interrupt_response": False},
        }
        if self.transcription_model:
            audio_input["transcription"] = {"model": self.transcription_model, "language": "pt"}
        session: dict[str, Any] = {
            "type": "realtime",
            "instructions": instructions,
            "output_modalities": [output],
            "audio": {"input": audio_input,
                      "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": voice}},
        }
        if tools:
            session["tools"] = [{key: tool[key] for key in _TOOL_KEYS if key in tool} for tool in tools]
            session["tool_choice"] = "auto"
        return session

    def _client(self) -> AsyncOpenAI:
        # max_retries only concerns HTTP calls; the WebSocket is opened once per turn.
        return AsyncOpenAI(api_key=self._api_key, websocket_base_url=self._websocket_base_url, max_retries=0)


def history_item(entry: dict) -> dict:
    """A stored user/assistant text message as a Realtime conversation item."""
    role = entry["role"]
    if role not in ("user", "assistant"):
        raise ValueError(f"history role must be user or assistant, not {role!r}")
    part = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": entry["content"]}]}


class _Turn:
    """The state of one ``run``: what was sent, what came back, and when."""

    def __init__(self, gateway: RealtimeGateway, *, instructions, history, tools, pcm, voice, output, on_tool_call,
                 chunk_ms, timeout):
        self.gateway = gateway
        self.instructions, self.history, self.tools = instructions, history, tools
        self.pcm, self.voice, self.output = pcm, voice, output
        self.on_tool_call, self.timeout = on_tool_call, timeout
        self.chunk_bytes = max(2, int(RATE * chunk_ms / 1000) * 2)
        self.audio = bytearray()
        self.transcripts: list[str] = []
        self.input_transcript: str | None = None
        self.usage: dict = {}
        self.tool_calls: list[dict] = []
        self.timings: dict = {}
        self.status = "completed"
        self.phase = "connect"
        self.started = time.monotonic()
        self.asked_at: float | None = None

    def _ms(self, since: float | None = None) -> float:
        return round((time.monotonic() - (self.started if since is None else since)) * 1000, 1)

    async def run(self) -> RealtimeResult:
        try:
            async with asyncio.timeout(self.timeout):
                await self._session()
        except TimeoutError as exc:
            if self.phase == "connect":
                raise RealtimeError("connect", f"no WebSocket handshake within {self.timeout:g} s") from exc
            raise RealtimeError("timeout", f"no complete answer within {self.timeout:g} s "
                                           f"(still {self.phase})") from exc
        except RealtimeError:
            raise
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise RealtimeError("auth", f"the Realtime API refused the key (HTTP {status})") from exc
            raise RealtimeError("connect", f"the Realtime API refused the handshake (HTTP {status})") from exc
        except ConnectionClosed as exc:
            raise RealtimeError("closed", f"connection closed while {self.phase} "
                                          f"(code {_close_code(exc)})") from exc
        except openai.WebSocketConnectionClosedError as exc:
            raise RealtimeError("closed", f"connection closed while {self.phase}") from exc
        except (OSError, InvalidHandshake, openai.OpenAIError) as exc:
            if self.phase != "connect":
                raise RealtimeError("closed", f"connection lost while {self.phase}: {type(exc).__name__}") from exc
            raise RealtimeError("connect", f"could not open the WebSocket: {type(exc).__name__}: {exc}") from exc
        self.timings["total"] = self._ms()
        if self.output == "audio" and not self.audio:
            raise RealtimeError("empty_audio", "the answer carried no audio")
        return RealtimeResult(audio=bytes(self.audio), output_transcript=" ".join(t for t in self.transcripts if t),
                              input_transcript=self.input_transcript, usage=self.usage, tool_calls=self.tool_calls,
                              timings=self.timings, status=self.status)

    async def _session(self) -> None:
        async with self.gateway._client() as client:
            await self._converse(client)

    async def _converse(self, client: AsyncOpenAI) -> None:
        manager = client.realtime.connect(model=self.gateway.model,
                                          websocket_connection_options={"close_timeout": _CLOSE_TIMEOUT})
        async with manager as conn:
            self.timings["connect"] = self._ms()
            self.phase = "opening the session"
            # The service greets with session.created, or refuses the session (unknown model,
            # quota) with an error event and a close: wait for it instead of racing that close.
            greeting = await conn.recv()
            if greeting.type == "error":
                raise _error_event(greeting)
            self.phase = "sending the turn"
            try:
                await self._send_turn(conn)
            except (ConnectionClosed, openai.WebSocketConnectionClosedError):
                await _raise_buffered_error(conn)
                raise
            rounds = 0
            while True:
                calls = await self._collect_response(conn)
                if not calls:
                    await self._await_input_transcript(conn)
                    return
                rounds += 1
                await self._run_tools(conn, calls, rounds)
                await self._ask(conn, tool_choice="none" if rounds >= self.gateway.max_tool_rounds else None)

    async def _send_turn(self, conn) -> None:
        await conn.session.update(session=self.gateway.session_config(
            instructions=self.instructions, tools=self.tools, voice=self.voice, output=self.output))
        for entry in self.history:
            await conn.conversation.item.create(item=history_item(entry))
        for start in range(0, len(self.pcm), self.chunk_bytes):
            chunk = self.pcm[start:start + self.chunk_bytes]
            await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode("ascii"))
        await conn.input_audio_buffer.commit()
        await self._ask(conn, tool_choice=None)

    async def _ask(self, conn, *, tool_choice: str | None) -> None:
        response = {"tool_choice": tool_choice} if tool_choice else None
        if response:
            await conn.response.create(response=response)
        else:
            await conn.response.create()
        if self.asked_at is None:
            self.asked_at = time.monotonic()
        self.phase = "waiting for the answer"

    async def _collect_response(self, conn) -> list[dict]:
        """Read events until this response is done; return its function calls (may be empty)."""
        spoken: list[str] = []
        final_transcript: str | None = None
        while True:
            event = await conn.recv()
            kind = event.type
            if kind == "error":
                raise _error_event(event)
            if kind == "response.output_audio.delta":
                if not self.audio:
                    self.timings["first_audio"] = self._ms(self.asked_at)
                self.audio.extend(base64.b64decode(event.delta))
            elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
                spoken.append(event.delta)
            elif kind == "response.output_audio_transcript.done":
                final_transcript = event.transcript
            elif kind == "response.output_text.done":
                final_transcript = event.text
            elif kind == "conversation.item.input_audio_transcription.completed":
                self.input_transcript = event.transcript
            elif kind == "response.done":
                return self._finish_response(event.response, final_transcript, spoken)

    async def _await_input_transcript(self, conn) -> None:
        """Give the input transcription a moment when the answer finished before it.

        The service transcribes beside the response, so for a short answer the transcript can
        come after ``response.done``; the pipeline wants it (it is what the user said, for the
        history of the next turns). The wait stops short of the turn's deadline: a complete
        answer is never lost for a missing transcript.
        """
        if self.input_transcript is not None or not self.gateway.transcription_model:
            return
        left = self.timeout - (time.monotonic() - self.started) - _DEADLINE_MARGIN
        grace = min(self.gateway.transcript_grace, left)
        if grace <= 0:
            return
        self.phase = "waiting for the input transcript"
        try:
            async with asyncio.timeout(grace):
                while self.input_transcript is None:
                    event = await conn.recv()
                    if event.type == "conversation.item.input_audio_transcription.completed":
                        self.input_transcript = event.transcript
                    elif event.type in ("conversation.item.input_audio_transcription.failed", "error"):
                        return
        except (TimeoutError, ConnectionClosed, openai.WebSocketConnectionClosedError):
            return

    def _finish_response(self, response, final_transcript: str | None, spoken: list[str]) -> list[dict]:
        status = response.status
        if status in ("failed", "cancelled"):
            details = response.status_details
            error = getattr(details, "error", None) if details else None
            why = getattr(error, "code", None) or getattr(details, "reason", None) or "no details"
            raise RealtimeError("error_event", f"response {status}: {why}")
        if status == "incomplete":
            self.status = "incomplete"  # e.g. max_output_tokens: keep what was said
        self.transcripts.append(final_transcript if final_transcript is not None else "".join(spoken))
        _add_usage(self.usage, response.usage.to_dict() if response.usage else {})
        return [{"call_id": item.call_id, "name": item.name, "arguments": item.arguments}
                for item in (response.output or []) if item.type == "function_call"]

    async def _run_tools(self, conn, calls: list[dict], round_number: int) -> None:
        self.phase = "running tools"
        for call in calls:
            output = self._tool_output(call)
            self.tool_calls.append({**call, "round": round_number, "output": output})
            await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call["call_id"],
                                                      "output": output})

    def _tool_output(self, call: dict) -> str:
        try:
            arguments = json.loads(call["arguments"] or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            return json.dumps({"error": "arguments are not a JSON object"})
        if self.on_tool_call is None:
            return json.dumps({"error": f"no tool named {call['name']}"})
        try:
            return self.on_tool_call(call["name"], arguments)
        except Exception as exc:  # a tool bug must not lose the user's turn: the model is told instead
            log.exception("realtime tool %s failed", call["name"])
            return json.dumps({"error": f"{call['name']} failed: {type(exc).__name__}"})


def _error_event(event) -> RealtimeError:
    error = event.error
    # A key can also be refused after the upgrade (e.g. revoked mid-session): still an auth problem.
    kind = "auth" if error.code in _AUTH_ERROR_CODES else "error_event"
    return RealtimeError(kind, f"{error.type}/{error.code or '-'}: {error.message}")


async def _raise_buffered_error(conn) -> None:
    """After the service closed on us mid-send, raise the error event it sent first, if any."""
    try:
        while True:
            event = await conn.recv()
            if event.type == "error":
                raise _error_event(event)
    except (ConnectionClosed, openai.WebSocketConnectionClosedError):
        return


def _add_usage(total: dict, usage: dict) -> None:
    """Sum token counts (nested detail dicts too) over the responses of one turn."""
    for key, value in usage.items():
        if isinstance(value, dict):
            _add_usage(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def _close_code(exc: ConnectionClosed) -> int | str:
    frame = exc.rcvd or exc.sent
    return frame.code if frame else "none: the connection dropped"
