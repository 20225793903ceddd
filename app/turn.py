"""The shared vocabulary of a message's life, at the bottom of the app: it imports nothing above it.

Every layer speaks these types: the channels (``Inbound`` in, ``OutboundPart`` out), the
knowledge base (``Passage``), the assistant and the pipeline (``UserSnapshot``, the turn
errors), the inbox (which decides retry or fail from the turn errors).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


class RetryableTurnError(Exception):
    """A provider failed in a way worth retrying later (5xx, timeout, 429 after the SDK's retries)."""

    def __init__(self, reason: str, kind: str = "provider"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class PermanentTurnError(Exception):
    """Retrying will not help (invalid key, refused request): fail the turn, tell the user, show operators."""

    def __init__(self, reason: str, kind: str = "provider"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class TurnSuperseded(Exception):
    """A newer message of the user arrived before the answer was decided: drop this attempt.

    Nothing of the attempt is sent; the inbox answers the grown turn instead (zero-wait
    coalescing: a turn starts at once and restarts, at most once, when the user goes on).
    """


@dataclass
class Inbound:
    """Our own message object, made from Twilio's form (the provider's names stop here)."""

    sid: str
    phone: str  # E.164
    wa_id: str | None
    profile_name: str | None
    body: str
    kind: str
    media_url: str | None
    media_type: str | None
    num_media: int
    extra: dict = field(default_factory=dict)


@dataclass
class UserSnapshot:
    """What the pipeline may know about the turn's user (read once when the turn starts)."""

    id: int
    phone: str
    channel: str
    name: str | None
    reply_mode: str
    message_count: int
    first_seen_at: dt.datetime

    @classmethod
    def of(cls, user) -> "UserSnapshot":
        """Snapshot of a ``models.User`` row."""
        return cls(id=user.id, phone=user.phone, channel=user.channel, name=user.display_name,
                   reply_mode=user.reply_mode, message_count=user.message_count, first_seen_at=user.first_seen_at)


@dataclass
class OutboundPart:
    """One WhatsApp message to send: text, or one media URL (audio carries no caption)."""

    index: int
    body: str | None = None
    media_url: str | None = None
    media_type: str | None = None
    kind: str = "text"  # text | audio | template
    # A WhatsApp template (Twilio Content SID and its variables): what may go out after the
    # 24-hour window. Set by the send policy (app/channels/policy.py), never by the pipeline.
    content_sid: str | None = None
    content_variables: dict | None = None


@dataclass
class Passage:
    """A retrieved knowledge-base chunk."""

    chunk_id: str
    source: str
    heading: str
    text: str
    score: float


# messages.extra["path"] of a message that came in on /webhook/whatsapp/realtime: a turn made
# only of such voice notes is answered on the realtime voice path (app/pipeline/realtime.py).
REALTIME_PATH = "realtime"
