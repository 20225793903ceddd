"""One error convention for every provider gateway: a classified ``GatewayError``.

A gateway (OpenAI, Twilio, ElevenLabs) never lets a vendor SDK's exception escape: it
raises a ``GatewayError`` subclass whose ``kind`` names what went wrong in the provider's
terms, whose ``retryable`` says whether trying later may help, and whose ``reason`` is safe
to show operators (no key, no request body). ``turn_error`` is the one mapping from a
gateway error to what the inbox acts on (retry the turn later, or fail it now).
"""
from __future__ import annotations

from app.turn import PermanentTurnError, RetryableTurnError


class GatewayError(Exception):
    provider = "provider"

    def __init__(self, kind: str, reason: str, *, retryable: bool, code: str | None = None,
                 status: int | None = None):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.retryable = retryable
        self.code = code
        self.status = status


def turn_error(exc: GatewayError, stage: str) -> RetryableTurnError | PermanentTurnError:
    """Invalid credentials fail the turn as ``auth`` (no retry fixes them); otherwise retry or fail as ``stage``."""
    if exc.kind == "auth":
        return PermanentTurnError(exc.reason, kind="auth")
    if exc.retryable:
        return RetryableTurnError(exc.reason, kind=stage)
    return PermanentTurnError(exc.reason, kind=stage)
