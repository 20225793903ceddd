"""The only module that imports the OpenAI SDK.

``OpenAIGateway`` wraps one ``openai.OpenAI`` client (Responses, embeddings,
transcriptions, model records) built from Settings. No SDK exception leaves it: ``classify_openai_error``
turns each into an ``OpenAIError`` (a ``GatewayError``: kind ``auth``, ``retryable`` or
``permanent``, with a reason that is safe to show operators: no key, no request body).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import numpy as np
import openai
from openai import OpenAI

from app.clients.errors import GatewayError
from app.config import Settings
from app.redaction import redact

log = logging.getLogger(__name__)

# The embeddings endpoint takes at most 2048 inputs per request.
MAX_EMBEDDING_BATCH = 2048


class OpenAIUnavailable(RuntimeError):
    """No OPENAI_API_KEY: the caller must use its offline path."""


class OpenAIError(GatewayError):
    provider = "openai"


class OpenAIGateway:
    def __init__(self, settings: Settings, on_call: Callable[[str], None] | None = None):
        self.settings = settings
        # Told of every model call ("respond", "transcribe", "embed") before it is made: the
        # app counts them against AI_CALLS_PER_DAY (app/ops/limits.py).
        self.on_call = on_call
        self._client: OpenAI | None = None
        if settings.openai_api_key:
            self._client = OpenAI(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url,  # None -> the SDK's default (or OPENAI_BASE_URL)
                timeout=settings.openai_timeout_seconds,
                max_retries=settings.openai_max_retries,
            )

    @property
    def available(self) -> bool:
        return self.settings.openai_configured

    @property
    def client(self) -> OpenAI:
        if self._client is None:
            raise OpenAIUnavailable("OPENAI_API_KEY is not set")
        return self._client

    def embed(self, texts: Iterable[str], model: str | None = None, *, timeout: float | None = None,
              max_retries: int | None = None) -> np.ndarray:
        """Embeddings of ``texts`` as a float32 matrix, one row per text, in order.

        ``timeout``/``max_retries`` override the client's for this call: a query embedding
        inside a turn must fail fast (retrieval then falls back to BM25) rather than wait.
        """
        texts = list(texts)
        model = model or self.settings.openai_embedding_model
        client = self.client
        if timeout is not None or max_retries is not None:
            options = {k: v for k, v in (("timeout", timeout), ("max_retries", max_retries)) if v is not None}
            client = client.with_options(**options)
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), MAX_EMBEDDING_BATCH):
            batch = texts[start:start + MAX_EMBEDDING_BATCH]
            self._count("embed")
            try:
                result = client.embeddings.create(model=model, input=batch)
            except Exception as exc:  # noqa: BLE001 - classified, never raw
                raise classify_openai_error(exc) from exc
            ordered = sorted(result.data, key=lambda item: item.index)
            rows.extend(np.asarray(item.embedding, dtype=np.float32) for item in ordered)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack(rows)

    def respond(self, **request: Any):
        """One Responses API call (``client.responses.create``); the caller owns the tool loop."""
        request.setdefault("model", self.settings.openai_model)
        client = self.client
        self._count("respond")
        try:
            return client.responses.create(**request)
        except Exception as exc:  # noqa: BLE001 - classified, never raw
            raise classify_openai_error(exc) from exc

    def transcribe(self, filename: str, data: bytes, content_type: str, prompt: str | None = None) -> str:
        """Portuguese speech to text. ``filename`` must carry an extension OpenAI knows (.ogg, .wav ...)."""
        kwargs: dict[str, Any] = dict(
            model=self.settings.openai_transcribe_model,
            file=(filename, data, content_type),
            language="pt",
            response_format="json",
        )
        if prompt:
            kwargs["prompt"] = prompt
        client = self.client
        self._count("transcribe")
        try:
            result = client.audio.transcriptions.create(**kwargs)
        except Exception as exc:  # noqa: BLE001 - classified, never raw
            raise classify_openai_error(exc) from exc
        return (getattr(result, "text", None) or "").strip()

    def model_info(self, model: str, *, timeout: float | None = None,
                   max_retries: int | None = None) -> dict | None:
        """OpenAI's record of ``model`` (``GET /v1/models/{model}``) as the JSON fields it sent.

        ``shutdown_date`` (``YYYY-MM-DD`` or null) is in the dict only when the API sent it,
        so a caller can tell "no date announced" from "the API said nothing". None when
        OpenAI answers 404 ``model_not_found`` (shut down, or not available to this key);
        every other failure raises a classified ``OpenAIError``.
        """
        client = self.client
        if timeout is not None or max_retries is not None:
            options = {k: v for k, v in (("timeout", timeout), ("max_retries", max_retries)) if v is not None}
            client = client.with_options(**options)
        try:
            record = client.models.retrieve(model)
        except openai.NotFoundError as exc:
            if getattr(exc, "code", None) == "model_not_found":
                return None
            raise classify_openai_error(exc) from exc
        except Exception as exc:  # noqa: BLE001 - classified, never raw
            raise classify_openai_error(exc) from exc
        # to_dict() keeps only the fields present in the payload (exclude_unset), extras included.
        return record.to_dict(mode="json")


    def _count(self, kind: str) -> None:
        if self.on_call is not None:
            try:
                self.on_call(kind)
            except Exception:  # noqa: BLE001 - bookkeeping must never stop an answer
                log.warning("could not count a model call", exc_info=True)


def classify_openai_error(exc: BaseException) -> OpenAIError:
    """The ``OpenAIError`` for an SDK exception: kind ``auth``, ``retryable`` or ``permanent``.

    The SDK has already retried 408/409/429/5xx by the time an error reaches us, so these
    are "retry later with backoff"; 401/403 are configuration problems no retry will fix.
    """
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return _error("auth", redact(f"OpenAI refused the credentials ({_status(exc)}): {_message(exc)}"))
    if isinstance(exc, openai.RateLimitError):
        return _error("retryable", redact(f"OpenAI rate limit (429): {_message(exc)}"))
    if isinstance(exc, openai.APITimeoutError):
        return _error("retryable", "OpenAI timed out")
    if isinstance(exc, openai.APIConnectionError):
        return _error("retryable", "OpenAI unreachable (connection error)")
    if isinstance(exc, openai.InternalServerError):
        return _error("retryable", redact(f"OpenAI server error ({_status(exc)}): {_message(exc)}"))
    if isinstance(exc, openai.APIResponseValidationError):
        return _error("retryable", "OpenAI sent a malformed response")
    if isinstance(exc, openai.APIStatusError):
        if _status(exc) in (408, 409) or (_status(exc) or 0) >= 500:
            return _error("retryable", redact(f"OpenAI error ({_status(exc)}): {_message(exc)}"))
        return _error("permanent", redact(f"OpenAI rejected the request ({_status(exc)}): {_message(exc)}"))
    if isinstance(exc, ValueError):
        # The SDK raises ValueError/JSONDecodeError for a body that is not JSON.
        return _error("retryable", "OpenAI sent a malformed response")
    return _error("retryable", redact(f"OpenAI call failed: {type(exc).__name__}"))


def _error(kind: str, reason: str) -> OpenAIError:
    return OpenAIError(kind, reason, retryable=kind == "retryable")


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None)


def _message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body) if isinstance(body.get("error", body), dict) else body
        message = inner.get("message") if isinstance(inner, dict) else None
        if message:
            return str(message)[:300]
    return str(getattr(exc, "message", "") or type(exc).__name__)[:300]
