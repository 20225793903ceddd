"""OpenAI Realtime API (GA) emulator: a real WebSocket server on 127.0.0.1 for the real SDK.

Point the SDK at it with ``OpenAI(api_key=fake.api_key, websocket_base_url=fake.ws_base_url)``;
the SDK appends ``/realtime`` to that base and ``?model=…`` to the query, so the emulator
listens on ``/v1/realtime``.

What it checks, like the service: ``Authorization: Bearer <key>`` (the handshake is refused
with 401 otherwise); the model in the query (an unknown or missing model is accepted at the
HTTP level and then answered with an ``error`` event ``model_not_found`` and a close: the
SDK notes that "a successful upgrade can still be followed by an admission error");
the shape of ``session.update`` (``type: realtime``, modalities, PCM 24 kHz formats, turn
detection, voice, function tools, no unknown keys); a commit of less than 100 ms of audio
(``input_audio_buffer_commit_empty``); a ``response.create`` while a response is active
(``conversation_already_has_active_response``); function outputs for call ids it never issued.

Where the service would silently fall back to defaults, the emulator is stricter, because a
silent default is the bug a test must catch: anything before ``session.update``, and a
``response.create`` with no committed audio or function output since the last response,
are answered with an ``error`` event (code ``emulator_order``).

Every client event is recorded (``events``), with the handshakes (``handshakes``), the
effective sessions (``sessions``), the committed input audio (``committed_seconds``), the
function outputs (``tool_outputs``) and the ``error`` events it sent (``errors_sent``).
Answers are real PCM16 24 kHz mono audio (a tone) split into several deltas. ``fault``
selects a failure: ``handshake_500``, ``error_event`` (on response.create), ``error_and_close``
(on the first client event), ``stall``, ``close_mid_response``; a
server that is not listening is ``closed_port_url()``. ``response_delay`` makes every response
wait that many seconds before its first output event (a model's thinking time, for benchmarks).
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import socket
import threading
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

RATE = 24_000
MODELS = frozenset({"gpt-realtime-2", "gpt-realtime-2.1", "gpt-realtime-2.1-mini"})
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})
SESSION_KEYS = frozenset({"type", "model", "instructions", "output_modalities", "audio", "include",
                          "max_output_tokens", "parallel_tool_calls", "prompt", "reasoning", "tool_choice",
                          "tools", "tracing", "truncation"})
TOOL_KEYS = frozenset({"type", "name", "description", "parameters"})
PCM_FORMAT = {"type": "audio/pcm", "rate": RATE}
FAULTS = frozenset({None, "handshake_500", "error_event", "error_and_close", "stall", "close_mid_response"})
MIN_COMMIT_BYTES = RATE * 2 // 10  # the service refuses to commit less than 100 ms
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def closed_port_url() -> str:
    """A ws:// base URL on which nothing listens: the connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/v1"


def tone_pcm16(seconds: float, frequency: float = 220.0, rate: int = RATE) -> bytes:
    """A sine tone at about -10 dBFS as 16-bit little-endian mono PCM."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2").tobytes()


class _ProtocolError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class RealtimeFake:
    """The emulator. ``start()``/``stop()`` (or ``with``); ``reset()`` between tests."""

    def __init__(self, api_key: str = "sk-test-realtime-0123456789"):
        self.api_key = api_key
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._lock = threading.Lock()
        self.reset()

    # -- lifecycle -------------------------------------------------------------
    @property
    def ws_base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def start(self) -> "RealtimeFake":
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # surfaced by start() instead of dying silently
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True, name="RealtimeFake")
        self._thread.start()
        ready.wait(10)
        if failure or not self.port:
            raise RuntimeError(f"realtime emulator did not start: {failure!r}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = self._loop = None
        self.port = 0

    def __enter__(self) -> "RealtimeFake":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        # max_queue=None: a session that stops reading (error_and_close) must still read the
        # client's close frame instead of pausing the socket behind unread events.
        async with serve(self._session, "127.0.0.1", 0, process_request=self._handshake, max_size=None,
                         max_queue=None, close_timeout=1) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stopping.wait()

    # -- settings and records --------------------------------------------------
    def reset(self) -> None:
        """Forget what was recorded and restore the default behaviour."""
        with self._lock:
            self._fault: str | None = None
            self.models = set(MODELS)
            self.answer_seconds = 1.2
            self.audio_deltas = 4
            self.input_transcript = "Oi, Endrigo! Quanto custa a mentoria?"
            self.output_text = "Olá! A mentoria custa R$ 500 por mês. Quer saber mais?"
            # One entry per response that should ask for a function instead of answering:
            # {"name": ..., "arguments": {...}}. Responses made with tool_choice "none" never do.
            self.tool_calls: list[dict] = []
            self.error_payload = {"type": "server_error", "code": "server_error",
                                  "message": "The server had an error while processing your request."}
            self.mid_response_deltas = 2
            # Seconds the "model" thinks before a response's first output event (benchmarks).
            self.response_delay = 0.0
            # Send the input transcription after the response's response.done, not before it.
            self.transcript_after_response = False
            self.handshakes: list[dict] = []
            self.events: list[dict] = []
            self.sessions: list[dict] = []
            self.committed_seconds: list[float] = []
            self.tool_outputs: list[dict] = []
            self.errors_sent: list[dict] = []

    @property
    def fault(self) -> str | None:
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        if value not in FAULTS:
            raise ValueError(f"unknown fault {value!r}; one of {sorted(f for f in FAULTS if f)}")
        self._fault = value

    def events_of(self, event_type: str) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e.get("type") == event_type]

    @property
    def input_audio_seconds(self) -> float:
        """Total seconds of PCM16 24 kHz audio committed (bytes / 2 / 24000)."""
        with self._lock:
            return sum(self.committed_seconds)

    # -- handshake ---------------------------------------------------------------
    def _handshake(self, connection: ServerConnection, request):
        split = urlsplit(request.path)
        record = {"path": split.path, "query": {k: v[0] for k, v in parse_qs(split.query).items()},
                  "headers": {k.lower(): v for k, v in request.headers.raw_items()}}
        with self._lock:
            self.handshakes.append(record)
            fault = self.fault
        if fault == "handshake_500":
            return self._http_error(connection, HTTPStatus.INTERNAL_SERVER_ERROR, "server_error",
                                    "The server had an error while processing your request.")
        if split.path != "/v1/realtime":
            return self._http_error(connection, HTTPStatus.NOT_FOUND, "not_found", f"Invalid URL (GET {split.path})")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self._http_error(connection, HTTPStatus.UNAUTHORIZED, None,
                                    "You didn't provide an API key. You need to provide your API key in an "
                                    "Authorization header using Bearer auth.")
        if auth[len("Bearer "):] != self.api_key:
            return self._http_error(connection, HTTPStatus.UNAUTHORIZED, "invalid_api_key",
                                    "Incorrect API key provided: sk-***.")
        return None

    @staticmethod
    def _http_error(connection: ServerConnection, status: HTTPStatus, code: str | None, message: str):
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": code}})
        response = connection.respond(status, body)
        response.headers["Content-Type"] = "application/json"
        return response

    # -- one connection ----------------------------------------------------------
    async def _session(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        model = query.get("model", [None])[0]
        state = _ConnectionState(model)
        if model not in self.models:
            # No session exists: the first and only event is the error, then the close.
            await self._send_error(ws, _ProtocolError(
                "model_not_found", f"The model '{model}' does not exist or you do not have access to it.",
                "model"), type_="invalid_request_error")
            await ws.close(1008, "model_not_found")
            return
        await self._send(ws, {"type": "session.created", "session": self._effective_session(state)})
        try:
            async for message in ws:
                event = json.loads(message)
                with self._lock:
                    self.events.append(event)
                if self.fault == "error_and_close":
                    # What the service does when it ends a session (quota, expiry): error, then close.
                    await self._send_error(ws, _ProtocolError("insufficient_quota", "You exceeded your current "
                                                              "quota."), type_="insufficient_quota")
                    await ws.close(1011, "insufficient_quota")
                    return
                try:
                    await self._dispatch(ws, state, event)
                except _ProtocolError as exc:
                    await self._send_error(ws, exc, client_event_id=event.get("event_id"))
        except ConnectionClosed:
            pass

    async def _dispatch(self, ws: ServerConnection, state: "_ConnectionState", event: dict) -> None:
        kind = event.get("type")
        if kind != "session.update" and state.session is None:
            raise _ProtocolError("emulator_order", f"{kind} before session.update: the session would run on "
                                 "defaults (no persona, wrong formats)")
        if kind == "session.update":
            session = event.get("session")
            self._validate_session(session)
            state.session = session
            with self._lock:
                self.sessions.append(session)
            await self._send(ws, {"type": "session.updated", "session": self._effective_session(state)})
        elif kind == "conversation.item.create":
            await self._create_item(ws, state, event.get("item") or {})
        elif kind == "input_audio_buffer.append":
            try:
                chunk = base64.b64decode(event.get("audio", ""), validate=True)
            except ValueError as exc:
                raise _ProtocolError("invalid_value", "audio is not valid base64", "audio") from exc
            state.buffer.extend(chunk)
        elif kind == "input_audio_buffer.commit":
            await self._commit(ws, state)
        elif kind == "response.create":
            if state.active_response or state.auto_responded:
                state.auto_responded = False
                raise _ProtocolError("conversation_already_has_active_response",
                                     "Conversation already has an active response in progress.")
            if not state.pending_input:
                raise _ProtocolError("emulator_order", "response.create without committed audio or a function "
                                     "output since the last response")
            if state.open_calls:
                raise _ProtocolError("emulator_order", f"function call(s) {sorted(state.open_calls)} have no "
                                     "function_call_output")
            await self._respond(ws, state, event.get("response") or {})
        elif kind == "input_audio_buffer.clear":
            state.buffer.clear()
        elif kind == "response.cancel":
            pass
        else:
            raise _ProtocolError("invalid_value", f"Invalid value: '{kind}'.", "type")

    # -- validation ----------------------------------------------------------------
    def _validate_session(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise _ProtocolError("invalid_type", "session must be an object", "session")
        unknown = sorted(set(session) - SESSION_KEYS)
        if unknown:
            raise _ProtocolError("unknown_parameter", f"Unknown parameter: 'session.{unknown[0]}'.",
                                 f"session.{unknown[0]}")
        if session.get("type") != "realtime":
            raise _ProtocolError("missing_required_parameter", "session.type must be 'realtime'", "session.type")
        if not isinstance(session.get("instructions", ""), str):
            raise _ProtocolError("invalid_type", "instructions must be a string", "session.instructions")
        modalities = session.get("output_modalities", ["audio"])
        if modalities not in (["audio"], ["text"]):
            raise _ProtocolError("invalid_value", "output_modalities must be ['audio'] or ['text']",
                                 "session.output_modalities")
        audio = session.get("audio", {})
        audio_in, audio_out = audio.get("input", {}), audio.get("output", {})
        if audio_in.get("format", PCM_FORMAT) != PCM_FORMAT:
            raise _ProtocolError("invalid_value", "input format must be audio/pcm at 24000 Hz",
                                 "session.audio.input.format")
        if audio_out.get("format", PCM_FORMAT) != PCM_FORMAT:
            raise _ProtocolError("invalid_value", "output format must be audio/pcm at 24000 Hz",
                                 "session.audio.output.format")
        if "voice" in audio_out and audio_out["voice"] not in VOICES:
            raise _ProtocolError("invalid_value", f"Invalid voice '{audio_out['voice']}'.",
                                 "session.audio.output.voice")
        detection = audio_in.get("turn_detection")
        if detection is not None and detection.get("type") not in ("server_vad", "semantic_vad"):
            raise _ProtocolError("invalid_value", "turn_detection.type must be server_vad or semantic_vad",
                                 "session.audio.input.turn_detection.type")
        transcription = audio_in.get("transcription")
        if transcription is not None and not isinstance(transcription.get("model"), str):
            raise _ProtocolError("missing_required_parameter", "transcription.model is required",
                                 "session.audio.input.transcription.model")
        for index, tool in enumerate(session.get("tools", [])):
            param = f"session.tools[{index}]"
            extra = sorted(set(tool) - TOOL_KEYS)
            if extra:  # e.g. the Responses API's "strict", which Realtime function tools do not take
                raise _ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{extra[0]}'.",
                                     f"{param}.{extra[0]}")
            if tool.get("type") != "function":
                raise _ProtocolError("invalid_value", "only function tools are emulated", f"{param}.type")
            if not _TOOL_NAME.match(str(tool.get("name", ""))):
                raise _ProtocolError("invalid_value", "invalid function name", f"{param}.name")
            parameters = tool.get("parameters")
            if not isinstance(parameters, dict) or parameters.get("type") != "object":
                raise _ProtocolError("invalid_value", "parameters must be a JSON Schema object", f"{param}.parameters")

    async def _create_item(self, ws: ServerConnection, state: "_ConnectionState", item: dict) -> None:
        kind = item.get("type")
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            allowed = {"user": {"input_text", "input_audio"}, "system": {"input_text"},
                       "assistant": {"output_text", "output_audio"}}.get(role)
            if allowed is None:
                raise _ProtocolError("invalid_value", f"Invalid role '{role}'.", "item.role")
            if not isinstance(content, list) or not content:
                raise _ProtocolError("invalid_type", "content must be a non-empty list", "item.content")
            for part in content:
                if part.get("type") not in allowed:
                    raise _ProtocolError("invalid_value", f"Invalid content type '{part.get('type')}' for role "
                                         f"'{role}'.", "item.content.type")
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in state.open_calls:
                raise _ProtocolError("invalid_value", f"No tool call found for call_id '{call_id}'.", "item.call_id")
            if not isinstance(item.get("output"), str):
                raise _ProtocolError("invalid_type", "output must be a string", "item.output")
            state.open_calls.discard(call_id)
            state.pending_input = True
            with self._lock:
                self.tool_outputs.append({"call_id": call_id, "output": item["output"]})
        else:
            raise _ProtocolError("invalid_value", f"Unsupported item type '{kind}'.", "item.type")
        stored = {"id": item.get("id") or _id("item"), **item, "status": "completed"}
        state.items.append(stored)
        await self._send(ws, {"type": "conversation.item.added", "previous_item_id": None, "item": stored})
        await self._send(ws, {"type": "conversation.item.done", "previous_item_id": None, "item": stored})

    async def _commit(self, ws: ServerConnection, state: "_ConnectionState") -> None:
        if len(state.buffer) < MIN_COMMIT_BYTES:
            seconds = len(state.buffer) / 2 / RATE
            raise _ProtocolError("input_audio_buffer_commit_empty", "Error committing input audio buffer: buffer "
                                 f"too small. Expected at least 100ms of audio, but buffer only has {seconds * 1000:.2f}"
                                 "ms of audio.")
        item_id = _id("item")
        with self._lock:
            self.committed_seconds.append(len(state.buffer) / 2 / RATE)
        state.buffer.clear()
        state.pending_input = True
        await self._send(ws, {"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": item_id})
        audio_in = state.session.get("audio", {}).get("input", {})
        if audio_in.get("transcription"):
            transcript = {"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                          "content_index": 0, "transcript": self.input_transcript,
                          "usage": {"type": "duration", "seconds": round(self.committed_seconds[-1], 2)}}
            if self.transcript_after_response:
                state.late_transcripts.append(transcript)
            else:
                await self._send(ws, transcript)
        detection = audio_in.get("turn_detection")
        if detection and detection.get("create_response", True):
            # With server VAD the service answers by itself when the speech stops; a client that
            # then sends its own response.create gets conversation_already_has_active_response.
            await self._respond(ws, state, {})
            state.auto_responded = True

    # -- responses --------------------------------------------------------------------
    async def _respond(self, ws: ServerConnection, state: "_ConnectionState", params: dict) -> None:
        state.pending_input = False
        state.active_response = True
        response_id = _id("resp")
        modalities = params.get("output_modalities") or state.session.get("output_modalities", ["audio"])
        base = {"object": "realtime.response", "id": response_id, "conversation_id": state.conversation_id,
                "output_modalities": modalities}
        await self._send(ws, {"type": "response.created", "response": {**base, "status": "in_progress",
                                                                       "output": [], "usage": None}})
        fault = self.fault
        if fault == "error_event":
            await self._send_error(ws, _ProtocolError(self.error_payload.get("code"), self.error_payload["message"]),
                                   type_=self.error_payload.get("type", "server_error"))
            state.active_response = False
            return
        if fault == "stall":
            return  # never finishes: response.done is not sent
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        wants_tool = params.get("tool_choice", state.session.get("tool_choice", "auto")) != "none"
        if wants_tool and state.tool_round < len(self.tool_calls):
            call = self.tool_calls[state.tool_round]
            state.tool_round += 1
            output = [await self._function_call(ws, state, response_id, call)]
        elif modalities == ["text"]:
            output = [await self._text_answer(ws, response_id)]
        else:
            item = await self._audio_answer(ws, response_id, fault)
            if item is None:
                return
            output = [item]
        usage = {"total_tokens": 250, "input_tokens": 180, "output_tokens": 70,
                 "input_token_details": {"text_tokens": 120, "audio_tokens": 60, "cached_tokens": 0},
                 "output_token_details": {"text_tokens": 20, "audio_tokens": 50}}
        state.active_response = False
        await self._send(ws, {"type": "response.done", "response": {**base, "status": "completed",
                                                                    "status_details": None, "output": output,
                                                                    "usage": usage}})
        # Transcription runs beside the response in the service; for a short answer it can
        # finish last.
        while state.late_transcripts:
            await self._send(ws, state.late_transcripts.pop(0))

    async def _function_call(self, ws, state, response_id: str, call: dict) -> dict:
        call_id, item_id = _id("call"), _id("item")
        arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False)
        state.open_calls.add(call_id)
        item = {"id": item_id, "type": "function_call", "status": "completed", "name": call["name"],
                "call_id": call_id, "arguments": arguments}
        await self._send(ws, {"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                              "item": {**item, "status": "in_progress", "arguments": ""}})
        await self._send(ws, {"type": "response.function_call_arguments.delta", "response_id": response_id,
                              "item_id": item_id, "output_index": 0, "call_id": call_id, "delta": arguments})
        await self._send(ws, {"type": "response.function_call_arguments.done", "response_id": response_id,
                              "item_id": item_id, "output_index": 0, "call_id": call_id, "name": call["name"],
                              "arguments": arguments})
        await self._send(ws, {"type": "response.output_item.done", "response_id": response_id, "output_index": 0,
                              "item": item})
        return item

    async def _text_answer(self, ws, response_id: str) -> dict:
        item_id, text = _id("item"), self.output_text
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        for piece in _split_text(text, 3):
            await self._send(ws, {"type": "response.output_text.delta", **where, "delta": piece})
        await self._send(ws, {"type": "response.output_text.done", **where, "text": text})
        return {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text}]}

    async def _audio_answer(self, ws, response_id: str, fault: str | None) -> dict | None:
        item_id, text = _id("item"), self.output_text
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        pcm = tone_pcm16(self.answer_seconds)
        count = max(1, self.audio_deltas)
        step = -(-len(pcm) // count) if pcm else 0
        step += step % 2  # whole samples in every delta
        chunks = [pcm[i:i + step] for i in range(0, len(pcm), step)] if pcm else []
        words = _split_text(text, max(1, len(chunks)))
        for index, chunk in enumerate(chunks):
            if fault == "close_mid_response" and index >= self.mid_response_deltas:
                ws.transport.abort()  # a dropped connection, no close frame
                return None
            await self._send(ws, {"type": "response.output_audio.delta", **where,
                                  "delta": base64.b64encode(chunk).decode("ascii")})
            if index < len(words):
                await self._send(ws, {"type": "response.output_audio_transcript.delta", **where,
                                      "delta": words[index]})
        await self._send(ws, {"type": "response.output_audio.done", **where})
        await self._send(ws, {"type": "response.output_audio_transcript.done", **where, "transcript": text})
        return {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_audio", "transcript": text}]}

    # -- wire helpers --------------------------------------------------------------------
    def _effective_session(self, state: "_ConnectionState") -> dict:
        session = {"type": "realtime", "object": "realtime.session", "id": state.session_id, "model": state.model,
                   "output_modalities": ["audio"], "instructions": "", "tools": [], "tool_choice": "auto",
                   "audio": {"input": {"format": PCM_FORMAT, "transcription": None,
                                       "turn_detection": {"type": "server_vad", "create_response": True}},
                             "output": {"format": PCM_FORMAT, "voice": "alloy", "speed": 1.0}}}
        if state.session:
            for key, value in state.session.items():
                if key == "audio":
                    for side in ("input", "output"):
                        session["audio"][side].update(value.get(side, {}))
                else:
                    session[key] = value
        return session

    async def _send(self, ws: ServerConnection, event: dict) -> None:
        await ws.send(json.dumps({"event_id": _id("event"), **event}, ensure_ascii=False))

    async def _send_error(self, ws: ServerConnection, exc: _ProtocolError, client_event_id: str | None = None,
                          type_: str = "invalid_request_error") -> None:
        error = {"type": type_, "code": exc.code, "message": exc.message, "param": exc.param,
                 "event_id": client_event_id}
        with self._lock:
            self.errors_sent.append(error)
        await self._send(ws, {"type": "error", "error": error})


class _ConnectionState:
    """What one WebSocket session has seen so far."""

    def __init__(self, model: str | None):
        self.model = model
        self.session_id = _id("sess")
        self.conversation_id = _id("conv")
        self.session: dict | None = None
        self.buffer = bytearray()
        self.items: list[dict] = []
        self.pending_input = False
        self.active_response = False
        self.open_calls: set[str] = set()
        self.tool_round = 0
        self.auto_responded = False  # server VAD answered a commit by itself
        self.late_transcripts: list[dict] = []


def _split_text(text: str, parts: int) -> list[str]:
    """``text`` cut into at most ``parts`` pieces on word boundaries that join back to it."""
    words = re.findall(r"\S+\s*", text)
    size = max(1, -(-len(words) // parts))
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]
