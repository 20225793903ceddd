"""ElevenLabs text-to-speech in Endrigo's cloned voice, through the official SDK.

``ElevenLabsGateway.synthesize`` asks for OGG/Opus directly (``opus_48000_32``): that is
what WhatsApp shows as a voice message, so no FFmpeg re-encoding is needed on the hot path.
The bytes are checked by their magic before anyone stores them, and every failure becomes
``TTSError(kind, reason)`` (a ``GatewayError``) with a reason free of secrets. Nothing
retries a synthesis: the speak stage answers by text at once and records the reason for
operators (provider health); only unusable Opus bytes lead to a second request, for PCM.

Preparing text for the voice is the assistant's job: app/assistant/speech_text.py.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from app.audio.formats import mime_for, sniff_audio_type
from app.clients.errors import GatewayError
from app.config import Settings
from app.redaction import redact

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_FORMAT = "opus_48000_32"
DEFAULT_TIMEOUT = 20.0

TTS_ERROR_KINDS = frozenset({"auth", "quota", "rate_limited", "server", "timeout", "bad_request", "bad_audio"})
RETRYABLE_KINDS = frozenset({"rate_limited", "server", "timeout"})

# Characters per request (ElevenLabs model docs, November 2026); unknown models get the smallest.
MODEL_CHAR_LIMITS = {
    "eleven_multilingual_v2": 10_000,
    "eleven_flash_v2_5": 40_000,
    "eleven_turbo_v2_5": 40_000,
    "eleven_v3": 5_000,
}
FALLBACK_CHAR_LIMIT = 5_000

# language_code enforces Portuguese normalisation (numbers, dates) on the models that take it;
# the SDK documents it as not supported on multilingual_v2, so it is only sent to these.
LANGUAGE_CODE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_v3"})
LANGUAGE_CODE = "pt"

# Settings of a calm, clear cloned voice; the voice's stored settings are overridden per request
# so that a change in the ElevenLabs UI cannot silently change how Endrigo sounds.
DEFAULT_VOICE_SETTINGS = {"stability": 0.5, "similarity_boost": 0.75, "style": 0.0,
                          "use_speaker_boost": True, "speed": 1.0}

# ElevenLabs' raw formats, which are not containers and so not in app.audio.formats.
_RAW_CONTENT_TYPES = {"pcm": "audio/L16", "ulaw": "audio/basic", "alaw": "audio/x-alaw-basic"}


class TTSError(GatewayError):
    """Speech synthesis failed. ``kind`` is one of TTS_ERROR_KINDS; ``reason`` is safe to show operators."""

    provider = "elevenlabs"

    def __init__(self, kind: str, reason: str, *, status: int | None = None):
        if kind not in TTS_ERROR_KINDS:
            raise ValueError(f"unknown TTSError kind {kind!r}")
        super().__init__(kind, reason, retryable=kind in RETRYABLE_KINDS, status=status)


@dataclass(frozen=True)
class SpeechAudio:
    data: bytes
    content_type: str
    format: str  # the ElevenLabs output_format, e.g. opus_48000_32


# ---- the gateway --------------------------------------------------------------------------

class ElevenLabsGateway:
    """The app's only door to ElevenLabs. Thread-safe: one SDK client (httpx pool) per process."""

    def __init__(self, settings: Settings, *, voice_settings: dict | None = None):
        self.settings = settings
        self.voice_settings = dict(DEFAULT_VOICE_SETTINGS if voice_settings is None else voice_settings)
        self._client = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.settings.elevenlabs_configured

    @property
    def char_limit(self) -> int:
        return MODEL_CHAR_LIMITS.get(self.settings.elevenlabs_model_id, FALLBACK_CHAR_LIMIT)

    def _sdk(self):
        with self._lock:
            if self._client is None:
                from elevenlabs.client import ElevenLabs

                kwargs = {"api_key": self.settings.elevenlabs_api_key, "timeout": DEFAULT_TIMEOUT}
                if self.settings.elevenlabs_base_url:
                    kwargs["base_url"] = self.settings.elevenlabs_base_url.rstrip("/")
                self._client = ElevenLabs(**kwargs)
            return self._client

    def _request_kwargs(self, text: str, output_format: str, timeout: float) -> dict:
        from elevenlabs import VoiceSettings

        model_id = self.settings.elevenlabs_model_id
        kwargs = {
            "voice_id": self.settings.elevenlabs_voice_id,
            "text": text,
            "model_id": model_id,
            "output_format": output_format,
            "voice_settings": VoiceSettings(**self.voice_settings),
            "apply_text_normalization": "auto",
            # No retries: a retry would not fit the turn's time budget; the answer goes as text instead.
            "request_options": {"timeout_in_seconds": timeout, "max_retries": 0},
        }
        if model_id in LANGUAGE_CODE_MODELS:
            kwargs["language_code"] = LANGUAGE_CODE
        return kwargs

    def synthesize(self, text: str, *, output_format: str = DEFAULT_OUTPUT_FORMAT,
                   timeout: float = DEFAULT_TIMEOUT) -> SpeechAudio:
        """Speak ``text`` (already prepared for speech) in Endrigo's voice; raise TTSError."""
        if not self.available:
            raise TTSError("auth", "ElevenLabs is not configured (ELEVENLABS_API_KEY)")
        text = text.strip()
        if not text:
            raise TTSError("bad_request", "nothing to say: the text is empty")
        if len(text) > self.char_limit:
            raise TTSError("bad_request", f"text has {len(text)} characters; "
                                          f"{self.settings.elevenlabs_model_id} accepts {self.char_limit}")
        data = self._convert(self._request_kwargs(text, output_format, timeout), timeout)
        check_audio_bytes(data, output_format)
        return SpeechAudio(data=data, content_type=content_type_for(output_format), format=output_format)

    def _convert(self, kwargs: dict, timeout: float) -> bytes:
        """Run the SDK call and collect the audio; map every failure to TTSError."""
        import httpx
        from elevenlabs.core.api_error import ApiError
        from elevenlabs.core.parse_error import ParsingError

        # httpx timeouts are per read: a server dripping bytes would never trip them.
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        chunks: list[bytes] = []
        try:
            for chunk in self._sdk().text_to_speech.convert(**kwargs):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TTSError("timeout", f"ElevenLabs did not finish within {timeout:g} s")
        except (ApiError, ParsingError) as exc:  # ParsingError: an error body of an unexpected shape
            raise classify_api_error(exc.status_code, exc.body) from exc
        except httpx.TimeoutException as exc:
            raise TTSError("timeout", f"ElevenLabs did not answer within {timeout:g} s") from exc
        except httpx.TransportError as exc:
            raise TTSError("server", f"could not reach ElevenLabs ({type(exc).__name__})") from exc
        log.debug("ElevenLabs synthesis took %.2f s", time.monotonic() - started)
        return b"".join(chunks)


# ---- errors and audio checks ----------------------------------------------------------------

def _detail(body) -> tuple[str, str]:
    """(code, message) from an ElevenLabs error body in any of its shapes."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        code = str(detail.get("code") or detail.get("status") or detail.get("type") or "")
        return code, str(detail.get("message") or "")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]  # FastAPI validation list
        location = ".".join(str(part) for part in first.get("loc", []))
        return str(first.get("type") or ""), f"{location}: {first.get('msg', '')}".strip(": ")
    return "", str(detail or "")[:200]


def classify_api_error(status: int | None, body) -> TTSError:
    """Map an HTTP error from ElevenLabs to a TTSError. Quota is a 401, not a 429."""
    code, message = _detail(body)
    # " - " rather than ": " keeps redact() from taking "invalid_api_key: Invalid" for a key=value secret.
    head = " ".join(part for part in (f"HTTP {status}", code) if part)
    reason = redact(f"{head} - {message}" if message else head)[:300]
    if status == 401:
        kind = "quota" if "quota" in code.lower() else "auth"
    elif status == 403:
        kind = "auth"
    elif status == 429:
        kind = "rate_limited"
    elif status is not None and status >= 500:
        kind = "server"
    elif status == 408:
        kind = "timeout"
    else:
        kind = "bad_request"  # 400, 404 (unknown voice), 422 validation
    return TTSError(kind, reason, status=status)


def content_type_for(output_format: str) -> str:
    codec = output_format.split("_", 1)[0]
    return mime_for(codec) or _RAW_CONTENT_TYPES.get(codec, "application/octet-stream")


def check_audio_bytes(data: bytes, output_format: str) -> None:
    """Raise TTSError bad_audio unless ``data`` starts like the requested format."""
    codec = output_format.split("_", 1)[0]
    if not data:
        raise TTSError("bad_audio", "ElevenLabs returned no audio")
    if codec == "opus" and not data.startswith(b"OggS"):
        raise TTSError("bad_audio", "expected OGG/Opus audio, got other bytes")
    if codec == "mp3" and sniff_audio_type(data[:16]) != "mp3":
        raise TTSError("bad_audio", "expected MP3 audio, got other bytes")
    if codec == "wav" and not (data.startswith(b"RIFF") and data[8:12] == b"WAVE"):
        raise TTSError("bad_audio", "expected WAV audio, got other bytes")
    if codec == "pcm" and len(data) % 2:
        raise TTSError("bad_audio", "PCM audio with an odd number of bytes")
