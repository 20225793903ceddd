"""ElevenLabs text-to-speech emulator returning real encoded audio.

Point the SDK at it with ``ElevenLabs(api_key=..., base_url=fake.base_url)``. It checks the
``xi-api-key`` header, the voice, the JSON body (FastAPI-style 422 list), the per-model
character limit and ``output_format``; it answers with genuine MP3 / OGG-Opus / PCM bytes
made by ffmpeg, about 60 ms per character, so duration- and codec-sensitive code is tested
for real. Quota (401 quota_exceeded) and concurrency (429) limits can be switched on.
"""
from __future__ import annotations

import json
import re
import secrets
import threading

from werkzeug.wrappers import Request, Response

from .audio_samples import SPEECH_EXPR, render
from .base import FakeServer, json_response

DEFAULT_VOICE = "SuM1a4mUYXCmWfwWYCx0"
MODEL_CHAR_LIMITS = {"eleven_multilingual_v2": 10_000, "eleven_v3": 5_000,
                     "eleven_flash_v2_5": 40_000, "eleven_turbo_v2_5": 40_000}
DEFAULT_MODEL = "eleven_multilingual_v2"
# output_format values the API (and SDK 2.78) knows: codec_samplerate[_bitrate].
OUTPUT_FORMATS = (
    [f"mp3_{r}" for r in ("22050_32", "24000_48", "44100_32", "44100_64", "44100_96", "44100_128", "44100_192")]
    + [f"opus_48000_{b}" for b in (32, 64, 96, 128, 192)]
    + [f"pcm_{r}" for r in (8000, 16000, 22050, 24000, 32000, 44100, 48000)]
    + [f"wav_{r}" for r in (8000, 16000, 22050, 24000, 32000, 44100, 48000)]
    + ["ulaw_8000", "alaw_8000"]
)
# codec -> (audio_samples encoding, Content-Type)
_CODECS = {"mp3": ("mp3", "audio/mpeg"), "opus": ("ogg_opus", "audio/ogg"), "pcm": ("s16le", "application/octet-stream"),
           "wav": ("wav", "audio/wav"), "ulaw": ("mulaw", "audio/basic"), "alaw": ("alaw", "application/octet-stream")}
SECONDS_PER_CHAR = 0.06
MAX_SECONDS = 30.0


def synthesize(text: str, output_format: str) -> tuple[bytes, str]:
    """Real audio of roughly speech length for ``text`` (cached by format and 0.5 s step)."""
    seconds = min(MAX_SECONDS, max(0.5, round(len(text) * SECONDS_PER_CHAR * 2) / 2))
    codec, rate, *bitrate = output_format.split("_")
    encoding, content_type = _CODECS[codec]
    return render(SPEECH_EXPR, seconds, encoding, int(rate), f"{bitrate[0]}k" if bitrate else None), content_type


class ElevenLabsFake(FakeServer):
    def __init__(self, api_key: str = "xi-test-key-0123456789", concurrency_limit: int | None = None,
                 character_limit: int | None = None):
        super().__init__()
        self.api_key = api_key
        self.default_concurrency_limit = concurrency_limit
        self.default_character_limit = character_limit
        self._state_lock = threading.Lock()
        self._in_flight = 0
        self._init_state()

    def _init_state(self) -> None:
        self.known_voices = {DEFAULT_VOICE}
        self.concurrency_limit = self.default_concurrency_limit  # 429 beyond this many requests at once
        self.character_limit = self.default_character_limit  # 401 quota_exceeded beyond this many characters
        self.characters_used = 0
        self.syntheses: list[dict] = []  # voice_id, model_id, output_format, text, stream

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self._init_state()

    # -- errors -----------------------------------------------------------------------
    _DEFAULTS = {
        400: ("validation_error", "invalid_request", "Invalid request"),
        401: ("authentication_error", "invalid_api_key", "Invalid API key"),
        404: ("not_found", "not_found", "Not found"),
        429: ("rate_limit_error", "too_many_concurrent_requests",
              "Too many concurrent requests. Your current subscription allows a limited number of concurrent requests."),
        500: ("internal_error", "internal_server_error", "Internal server error"),
        503: ("service_unavailable", "system_busy", "The system is experiencing heavy traffic, please try again later."),
    }

    def error_body(self, status: int, message: str | None = None, code: str | None = None, type_: str | None = None):
        d_type, d_code, d_message = self._DEFAULTS.get(status, ("error", "error", "Error"))
        return {"detail": {"type": type_ or d_type, "code": code or d_code, "message": message or d_message,
                           "request_id": secrets.token_hex(10)}}, {}

    def _error(self, status: int, code: str, message: str, type_: str | None = None) -> Response:
        return json_response(self.error_body(status, message, code, type_)[0], status)

    def quota_exceeded(self) -> None:
        """The next request fails like an exhausted character quota (401, not 429)."""
        self.fail_next(401, body=self.error_body(
            401, "This request exceeds your quota of 10000. You have 0 credits remaining, while 100 credits are "
                 "required for this request.", "quota_exceeded", "authentication_error")[0])

    # -- routing ----------------------------------------------------------------------
    def _dispatch(self, request: Request) -> Response:
        # Counted around the whole answer, including set_latency(), so slow syntheses overlap.
        with self._state_lock:
            if self.concurrency_limit is not None and self._in_flight >= self.concurrency_limit:
                return json_response(self.error_body(429)[0], 429)
            self._in_flight += 1
        try:
            return super()._dispatch(request)
        finally:
            with self._state_lock:
                self._in_flight -= 1

    def handle(self, request: Request) -> Response:
        match = re.fullmatch(r"/v1/text-to-speech/([^/]+)(/stream)?", request.path)
        if not match or request.method != "POST":
            return json_response({"detail": "Not Found"}, 404)
        if request.headers.get("xi-api-key") != self.api_key:
            return self._error(401, "invalid_api_key", "Invalid API key")
        return self._tts(request, match.group(1), stream=bool(match.group(2)))

    def _tts(self, request: Request, voice_id: str, stream: bool) -> Response:
        # FastAPI validates query and body first (422), then the handler looks up the voice.
        problems = []
        output_format = request.args.get("output_format", "mp3_44100_128")
        if output_format not in OUTPUT_FORMATS:
            problems.append({"type": "enum", "loc": ["query", "output_format"], "input": output_format,
                             "msg": f"Input should be {', '.join(repr(f) for f in OUTPUT_FORMATS)}"})
        try:
            body = json.loads(request.get_data() or b"")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            problems.append({"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error", "input": None})
            body = {}
        elif not isinstance(body.get("text"), str):
            kind = "missing" if "text" not in body else "string_type"
            problems.append({"type": kind, "loc": ["body", "text"], "input": body.get("text", body),
                             "msg": "Field required" if kind == "missing" else "Input should be a valid string"})
        for name, value in (body.get("voice_settings") or {}).items():
            low, high = (0.7, 1.2) if name == "speed" else (0.0, 1.0)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
                problems.append({"type": "less_than_equal" if value > high else "greater_than_equal",
                                 "loc": ["body", "voice_settings", name], "input": value,
                                 "msg": f"Input should be {'less' if value > high else 'greater'} than or equal to "
                                        f"{high if value > high else low}"})
        if problems:
            return json_response({"detail": problems}, 422)
        if voice_id not in self.known_voices:
            return self._error(404, "voice_not_found", f"A voice with voice_id '{voice_id}' was not found.",
                               "not_found")
        model_id = body.get("model_id") or DEFAULT_MODEL
        text = body["text"]
        if model_id not in MODEL_CHAR_LIMITS:
            return self._error(400, "model_not_found", f"A model with model ID {model_id} does not exist.",
                               "validation_error")
        if not text.strip():
            return self._error(400, "invalid_text", "Text must not be empty.", "validation_error")
        limit = MODEL_CHAR_LIMITS[model_id]
        if len(text) > limit:
            return self._error(400, "max_character_limit_exceeded", f"Text is too long: {len(text)} characters. "
                               f"The maximum for {model_id} is {limit} characters.", "validation_error")
        with self._state_lock:
            if self.character_limit is not None and self.characters_used + len(text) > self.character_limit:
                remaining = self.character_limit - self.characters_used
                return self._error(401, "quota_exceeded", f"This request exceeds your quota of "
                                   f"{self.character_limit}. You have {remaining} credits remaining, while "
                                   f"{len(text)} credits are required for this request.", "authentication_error")
            self.characters_used += len(text)
            self.syntheses.append({"voice_id": voice_id, "model_id": model_id, "output_format": output_format,
                                   "text": text, "stream": stream})
        audio, content_type = synthesize(text, output_format)
        headers = {"request-id": secrets.token_hex(10), "character-cost": str(len(text))}
        if stream:
            # Chunked like the real /stream endpoint: no Content-Length, several writes.
            chunks = (audio[i:i + 4096] for i in range(0, len(audio), 4096))
            return Response(chunks, content_type=content_type, headers=headers, direct_passthrough=True)
        return Response(audio, content_type=content_type, headers=headers)
