"""The realtime voice path: a turn of voice notes answered speech to speech on the OpenAI Realtime API.

``EndrigoRealtimeAudioClone`` runs ONE Realtime session per turn:

1. the download stage fetches the notes (same allowed hosts, size cap, notices);
2. FFmpeg decodes each note to PCM16 24 kHz mono, webrtcvad trims the silence around the
   speech (app/audio/pcm.py); a note with no speech gets today's notice
   (``notices.AUDIO_SILENT``) and, when no note has speech, no session is opened at all;
3. ``RealtimeGateway.run`` (app/clients/openai_realtime.py): the persona as instructions
   (``build_instructions``), the user's recent history from our database (``load_history``),
   the six function tools run through ``app.assistant.tools.execute`` (a lead or a handoff
   works in a voice conversation too), the trimmed audio, server VAD, within
   ``REALTIME_TIMEOUT_SECONDS``;
4. ``REALTIME_VOICE=openai``: the answer's PCM (``OPENAI_REALTIME_VOICE``) becomes an
   OGG/Opus voice note, stored like the store stage stores one; ``elevenlabs``: the session
   answers in text and the speak stage says it in Endrigo's cloned ElevenLabs voice (the
   "clone" in the name). A user whose preference is text gets text either way;
5. the reply leaves through the send stage, so the outbox (decide, then send) gives the same
   exactly-once guarantee as the main pipeline; the user's transcription is stored on the
   inbound message and our transcript is the turn's answer text (history of later turns).

Fallback: a failed connection or handshake, a refused key, an ``error`` event, a timeout, a
close mid-response, an answer without audio or text, or a conversion failure leave the turn
untouched for the main pipeline (the caller runs the stages after the download), once: the
row recorded in ``realtime_sessions`` with the reason keeps later attempts of the same turn
off this path. Nothing is sent before the decision, so the user gets exactly one answer.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from app.assistant.formatting import to_whatsapp
from app.assistant.prompt import build_instructions, format_passages, load_history
from app.assistant.reply_mode import voice_reply_due
from app.assistant.tools import ToolContext, execute, tool_definitions
from app.audio.ffmpeg import AudioError
from app.audio.pcm import RATE, duration_seconds, pcm_to_ogg_opus, to_pcm16_24k, trim_silence
from app.clients.openai_realtime import RealtimeError
from app.db import utcnow
from app.knowledge import load_persona
from app.localtime import local_midnight_utc, now_local, to_local
from app.models import Message, RealtimeSession
from app.pipeline import download, notices, send, speak, store
from app.pipeline.answer import FALLBACK_HANDOFF
from app.pipeline.context import TurnContext
from app.redaction import redact
from app.turn import REALTIME_PATH

ANSWERED, FALLBACK, ABANDONED = "answered", "fallback", "abandoned"
# Reasons beside the gateway's RealtimeError kinds (connect, auth, error_event, timeout, closed, empty_audio).
CONVERSION, EMPTY_ANSWER, STORAGE, INTERNAL = "conversion", "empty_answer", "storage", "internal"
# Provider trouble (shown on the realtime card); a conversion failure is about the note, not the service.
_PROVIDER_REASONS = frozenset({"connect", "auth", "error_event", "timeout", "closed", "empty_audio", EMPTY_ANSWER})
FFMPEG_TIMEOUT_SECONDS = 30
# Between two notes of one turn: the model hears where one ends and the next begins.
GAP_BETWEEN_NOTES_SECONDS = 0.3
# The knowledge base is not searched before a voice session (there is no text yet); the model
# is told to use its search tool instead of reading "nothing was found".
VOICE_CONTEXT = ("(conversa por voz: ainda não há trechos da base de conhecimento para esta mensagem. "
                 "Antes de responder sobre serviços, preços, prazos ou fatos da Endrigo Digital, "
                 "consulte a ferramenta search_knowledge.)")


def eligible(ctx: TurnContext) -> bool:
    """Whether the turn takes the realtime path: only voice notes (no typed text, not even a caption)
    that all came in on the realtime webhook, nothing decided yet, and no fallback before."""
    if ctx.services.realtime is None or ctx.decided or ctx.answer_text is not None or not ctx.items:
        return False
    if not all(item.kind == "audio" and item.media_url and not (item.body or "").strip()
               and item.extra.get("path") == REALTIME_PATH for item in ctx.items):
        return False
    return not fell_back_before(ctx.services.db, ctx.turn_id)


def fell_back_before(db, turn_id: int) -> bool:
    with db.session() as session:
        return session.scalar(select(RealtimeSession.id).where(
            RealtimeSession.turn_id == turn_id, RealtimeSession.outcome == FALLBACK).limit(1)) is not None


@dataclass
class Outcome:
    """How the realtime path ended: ``answered`` (the reply went to the outbox), or the main
    pipeline must answer, skipping ``stages_done`` (already run on this turn)."""

    answered: bool
    stages_done: tuple[str, ...] = ()
    reason: str | None = None


class _Fallback(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, redact(detail)


@dataclass
class _Session:
    """What one session produced, for the realtime_sessions row."""

    input_seconds: float | None = None
    output_seconds: float | None = None
    latency_ms: float | None = None
    first_audio_ms: float | None = None


class EndrigoRealtimeAudioClone:
    """One turn of voice notes, answered through one Realtime session (see the module docstring)."""

    def __init__(self, ctx: TurnContext):
        self.ctx = ctx
        self.settings = ctx.settings
        self.gateway = ctx.services.realtime
        self.tool_ctx = ToolContext.for_turn(ctx)
        self.session = _Session()
        self.stages_done: list[str] = []
        self.tool_records: list[dict] = []  # this session's entries of ctx.tool_calls, in call order
        self.speaker = "openai" if self.settings.realtime_voice == "openai" else "elevenlabs"

    # ---- the turn ------------------------------------------------------------------------
    def reply(self) -> Outcome:
        ctx = self.ctx
        self._timed("download", download.run)
        self.stages_done.append("download")
        if any(item.notice for item in ctx.items):
            # A note we could not fetch: the main pipeline tells the user, as for any voice note.
            return Outcome(False, tuple(self.stages_done))
        try:
            with_speech = self._prepare_audio()
        except _Fallback as exc:
            return self._fall_back(exc)
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the turn: the main pipeline answers
            ctx.log.exception("realtime audio preparation failed unexpectedly")
            return self._fall_back(_Fallback(INTERNAL, type(exc).__name__))
        if not with_speech:
            ctx.log.info("realtime: no speech in the note(s); no session opened")
            self._deliver()  # the notices alone (same words as the main pipeline)
            return Outcome(True)
        try:
            result = self._converse(with_speech)
            self._take_answer(result)
            if ctx.reply_kind == "audio":
                self._timed("store", store.run)
                if ctx.reply_kind != "audio" and not ctx.answer_text:
                    raise _Fallback(STORAGE, "the voice note could not be stored and the answer has no transcript")
        except _Fallback as exc:
            return self._fall_back(exc)
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the turn: the main pipeline answers
            ctx.log.exception("realtime path failed unexpectedly")
            return self._fall_back(_Fallback(INTERNAL, type(exc).__name__))
        ctx.services.provider_health.ok("realtime")
        try:
            self._deliver()
        finally:
            # Answered once the outbox holds the reply, even if sending it fails now (the inbox
            # retries the send); not decided means the attempt was given up before the decision.
            self._record(ANSWERED if ctx.decided else ABANDONED)
        return Outcome(True)

    def _prepare_audio(self) -> list[tuple]:
        """(item, trimmed PCM) of each note with speech; silent notes get the notice, once all decoded."""
        with_speech, silent = [], []
        started = time.perf_counter()
        for item in self.ctx.items:
            try:
                pcm = to_pcm16_24k(item.media_path, timeout=FFMPEG_TIMEOUT_SECONDS,
                                   max_seconds=self.settings.max_audio_seconds)
            except AudioError as exc:
                raise _Fallback(CONVERSION, f"the note could not be decoded ({exc.kind})") from exc
            item.audio_seconds = duration_seconds(pcm)
            trimmed = trim_silence(pcm)
            if trimmed:
                with_speech.append((item, trimmed))
            else:
                silent.append(item)
        for item in silent:
            item.notice = notices.AUDIO_SILENT
        self.ctx.timings["realtime_convert"] = round((time.perf_counter() - started) * 1000, 1)
        return with_speech

    def _converse(self, with_speech: list[tuple]):
        ctx = self.ctx
        gap = b"\x00\x00" * int(RATE * GAP_BETWEEN_NOTES_SECONDS)
        pcm = gap.join(trimmed for _item, trimmed in with_speech)
        self.session.input_seconds = round(duration_seconds(pcm), 3)
        output = "audio" if self.speaker == "openai" and self._voice_due() else "text"
        persona = load_persona(self.settings.documents_dir)
        instructions = build_instructions(persona, [], ctx.user, by_voice=self._voice_due())
        instructions = instructions.replace(format_passages([]), VOICE_CONTEXT)
        history = load_history(ctx.services.db, ctx.user.id, ctx.turn_id)
        started = time.perf_counter()
        try:
            result = self.gateway.run(
                instructions=instructions, history=history, tools=tool_definitions(), pcm16_24k=pcm,
                voice=self.settings.openai_realtime_voice, output=output, on_tool_call=self._tool,
                timeout=self.settings.realtime_timeout_seconds)
        except RealtimeError as exc:
            self.session.latency_ms = round((time.perf_counter() - started) * 1000, 1)
            raise _Fallback(exc.kind, exc.reason) from exc
        except ValueError as exc:  # audio the service would refuse (under 100 ms)
            raise _Fallback(CONVERSION, str(exc)) from exc
        self.session.latency_ms = result.timings.get("total")
        self.session.first_audio_ms = result.timings.get("first_audio")
        self.session.output_seconds = round(result.audio_seconds, 3) if result.audio else None
        ctx.timings["realtime"] = round((time.perf_counter() - started) * 1000, 1)
        ctx.log.info("realtime session: %.1f s in, %.1f s out, %d tool call(s), %s", self.session.input_seconds,
                     result.audio_seconds, len(result.tool_calls), result.status)
        for record, call in zip(self.tool_records, result.tool_calls):
            record["round"] = call["round"]  # the model's response round, as the main answer records it
        self._keep_transcription(with_speech[0][0], result.input_transcript)
        return result

    def _tool(self, name: str, arguments: dict) -> str:
        """A function call inside the session, run like the main answer runs it (and recorded)."""
        result = execute(self.tool_ctx, name, json.dumps(arguments, ensure_ascii=False))
        record = {**result.record, "round": None, "path": "realtime"}  # round: known when the session ends
        self.ctx.tool_calls.append(record)
        self.tool_records.append(record)
        self.ctx.log.info("tool %s %s in %.0f ms (realtime)", name, "ok" if result.record["ok"] else "error",
                          result.record["ms"])
        return result.output_json

    def _take_answer(self, result) -> None:
        ctx = self.ctx
        if result.audio:
            started = time.perf_counter()
            try:
                ogg = pcm_to_ogg_opus(result.audio, RATE, timeout=FFMPEG_TIMEOUT_SECONDS)
            except AudioError as exc:
                raise _Fallback(CONVERSION, f"the answer could not be encoded ({exc.kind})") from exc
            ctx.timings["realtime_encode"] = round((time.perf_counter() - started) * 1000, 1)
            ctx.audio_bytes, ctx.audio_content_type, ctx.reply_kind = ogg, "audio/ogg", "audio"
            ctx.answer_text = to_whatsapp(result.output_transcript).strip() or None
            return
        text = to_whatsapp(result.output_transcript).strip()
        if not text:
            raise _Fallback(EMPTY_ANSWER, "the answer carried no text")
        ctx.answer_text = text

    def _keep_transcription(self, item, transcript: str | None) -> None:
        """What the user said, on the first note with speech (the history of later turns reads it)."""
        if not transcript or not transcript.strip():
            return
        item.transcription = transcript.strip()
        with self.ctx.services.db.session() as session:
            message = session.get(Message, item.message_id)
            if message is not None:
                message.transcription = item.transcription

    def _deliver(self) -> None:
        """Through the same stages the main pipeline ends with, so the outbox decides and sends once."""
        if self.ctx.reply_kind != "audio" and self.ctx.answer_text:
            # A text answer: the speak stage says it in the cloned ElevenLabs voice when a voice
            # reply is due (REALTIME_VOICE=elevenlabs); the audio answer was stored already.
            self._timed("speak", speak.run)
            self._timed("store", store.run)
        self._timed("send", send.run)

    def _fall_back(self, exc: _Fallback) -> Outcome:
        ctx = self.ctx
        ctx.log.warning("realtime path fell back to the main pipeline (%s): %s", exc.reason, exc.detail)
        for item in ctx.items:  # the main pipeline decides about every note again
            if item.notice == notices.AUDIO_SILENT:
                item.notice = None
        ctx.audio_bytes = ctx.audio_content_type = ctx.audio_url = None
        ctx.reply_kind, ctx.answer_text = "text", None
        if exc.reason in _PROVIDER_REASONS:
            ctx.services.provider_health.error("realtime", f"{exc.reason}: {exc.detail}")
        self._record(FALLBACK, exc.reason, exc.detail)
        if self.tool_ctx.handoff_opened:
            # A retry of the answer would find the handoff open and stay silent: confirm it now.
            ctx.answer_text = FALLBACK_HANDOFF
        return Outcome(False, tuple(self.stages_done), exc.reason)

    # ---- helpers -------------------------------------------------------------------------
    def _voice_due(self) -> bool:
        return voice_reply_due(self.ctx.user.reply_mode, True)

    def _timed(self, name: str, stage) -> None:
        started = time.perf_counter()
        try:
            stage(self.ctx)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            if elapsed >= 0.5 or name == "send":
                self.ctx.timings[name] = round(elapsed, 1)

    def _record(self, outcome: str, reason: str | None = None, detail: str | None = None) -> None:
        s = self.session
        try:
            with self.ctx.services.db.session() as session:
                session.add(RealtimeSession(
                    turn_id=self.ctx.turn_id, user_id=self.ctx.user.id, outcome=outcome, reason=reason,
                    error=detail[:500] if detail else None, model=self.settings.openai_realtime_model,
                    voice=self.speaker, input_seconds=s.input_seconds, output_seconds=s.output_seconds,
                    latency_ms=s.latency_ms, first_audio_ms=s.first_audio_ms,
                ))
        except Exception:  # noqa: BLE001 - bookkeeping must not lose the turn
            self.ctx.log.warning("could not record the realtime session", exc_info=True)


def run(ctx: TurnContext) -> Outcome:
    return EndrigoRealtimeAudioClone(ctx).reply()


# ---- for operators ---------------------------------------------------------------------------

def session_stats(db) -> dict:
    """Today's sessions (São Paulo day): count, successes, fallbacks by reason, latency, last error."""
    since = local_midnight_utc(now_local().date())
    with db.session() as session:
        rows = session.execute(
            select(RealtimeSession.outcome, RealtimeSession.reason, RealtimeSession.latency_ms,
                   RealtimeSession.first_audio_ms)
            .where(RealtimeSession.created_at >= since)
        ).all()
        last = session.execute(
            select(RealtimeSession.reason, RealtimeSession.error, RealtimeSession.created_at)
            .where(RealtimeSession.outcome == FALLBACK)
            .order_by(RealtimeSession.created_at.desc(), RealtimeSession.id.desc()).limit(1)
        ).first()
    fallbacks: dict[str, int] = {}
    for row in rows:
        if row.outcome == FALLBACK:
            fallbacks[row.reason or INTERNAL] = fallbacks.get(row.reason or INTERNAL, 0) + 1
    latencies = sorted(r.latency_ms for r in rows if r.outcome == ANSWERED and r.latency_ms is not None)
    first_audio = sorted(r.first_audio_ms for r in rows if r.outcome == ANSWERED and r.first_audio_ms is not None)
    return {
        "sessions_today": len(rows),
        "successes": sum(1 for r in rows if r.outcome == ANSWERED),
        "fallbacks": sum(fallbacks.values()),
        "fallbacks_by_reason": dict(sorted(fallbacks.items())),
        "abandoned": sum(1 for r in rows if r.outcome == ABANDONED),
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        "first_audio_ms": {"p50": percentile(first_audio, 50), "p95": percentile(first_audio, 95)},
        "last_error": None if last is None else {
            "reason": last.reason, "message": redact(last.error or "")[:300] or None,
            "at": to_local(last.created_at).isoformat(timespec="seconds"),
        },
    }


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return round(float(sorted_values[rank - 1]), 1)


def probe_phrase_pcm(seconds: float = 2.0) -> bytes:
    """A short speech-like sound (voiced harmonics in syllables), PCM16 24 kHz mono, for /test/realtime-audio.

    No text-to-speech engine is guaranteed on the server, so the phrase is synthesised here: a
    gliding 120-160 Hz pitch with four harmonics, gated into about four syllables a second,
    which the silence trim and the service's voice detection both take for speech.
    """
    t = np.arange(int(RATE * seconds)) / RATE
    phase = 2 * np.pi * 140 * t + 6 * np.sin(2 * np.pi * 0.9 * t)
    voice = sum(weight * np.sin(k * phase) for k, weight in ((1, 0.45), (2, 0.25), (3, 0.15), (5, 0.08)))
    envelope = np.maximum(0, np.sin(2 * np.pi * 3.7 * t)) ** 2 * (0.55 + 0.45 * np.sin(2 * np.pi * 0.45 * t + 1))
    return (0.8 * 32767 * voice * envelope).astype("<i2").tobytes()


def probe_session(services, seconds: float = 2.0) -> dict:
    """Run the generated phrase through a real session (no user, nothing sent); JSON for operators."""
    settings = services.settings
    base = {"model": settings.openai_realtime_model, "voice": settings.openai_realtime_voice,
            "speaker": settings.realtime_voice}
    if services.realtime is None:
        return {**base, "ok": False, "error": "not_configured",
                "reason": "Sem OPENAI_API_KEY: a voz em tempo real não está configurada."}
    pcm = trim_silence(probe_phrase_pcm(seconds)) or probe_phrase_pcm(seconds)
    started = time.perf_counter()
    try:
        result = services.realtime.run(
            instructions="Teste de diagnóstico do painel. Responda em português, em uma frase curta.",
            history=[], tools=[], pcm16_24k=pcm, voice=settings.openai_realtime_voice,
            output="audio" if settings.realtime_voice == "openai" else "text",
            timeout=settings.realtime_timeout_seconds)
    except RealtimeError as exc:
        services.provider_health.error("realtime", f"{exc.kind}: {exc.reason}")
        return {**base, "ok": False, "error": exc.kind, "reason": exc.reason,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)}
    services.provider_health.ok("realtime")
    return {**base, "ok": True, "input_seconds": round(duration_seconds(pcm), 3),
            "output_seconds": round(result.audio_seconds, 3), "transcript": result.output_transcript[:300],
            "input_transcript": (result.input_transcript or "")[:300] or None, "timings_ms": result.timings,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1), "at": utcnow().isoformat() + "Z"}
