"""The one object the pipeline's stages pass along: ``TurnContext`` (and its ``InboundItem``).

A turn is the answer to one or more coalesced inbound messages of one user. Each stage
reads and fills fields of the context; none talks to another stage directly.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from app.turn import OutboundPart, Passage, TurnSuperseded, UserSnapshot

if TYPE_CHECKING:  # pragma: no cover
    from app.services import Services


@dataclass
class InboundItem:
    """One inbound message of the turn, with what the stages learn about it."""

    message_id: int
    kind: str  # text | audio | image | video | document | sticker | location | contacts | other
    body: str | None
    media_url: str | None = None
    media_type: str | None = None
    extra: dict = field(default_factory=dict)
    media_path: Path | None = None  # downloaded file, inside the turn's temporary folder
    wav_path: Path | None = None  # 16 kHz mono WAV for transcription
    audio_seconds: float | None = None
    transcription: str | None = None
    # A Portuguese sentence for the user about this item (not audio, unreadable, silent ...).
    notice: str | None = None

    @property
    def text(self) -> str:
        """What the user said in this message: typed text and transcribed speech."""
        parts = [p for p in (self.body, self.transcription) if p and p.strip()]
        return "\n".join(p.strip() for p in parts)


@dataclass
class TurnContext:
    services: "Services"
    turn_id: int
    user: UserSnapshot
    items: list[InboundItem]
    attempt: int = 1
    tmpdir: Path | None = None
    log: logging.LoggerAdapter | logging.Logger = field(default_factory=lambda: logging.getLogger("app.pipeline"))
    started_monotonic: float = field(default_factory=time.monotonic)

    passages: list[Passage] = field(default_factory=list)
    answer_text: str | None = None
    reply_kind: str = "text"  # text | audio
    audio_bytes: bytes | None = None
    audio_content_type: str | None = None
    audio_url: str | None = None
    # With a voice reply: what was not spoken (long answers), sent as text after the audio.
    text_after_audio: str | None = None
    parts: list[OutboundPart] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # True once the answer and its parts are stored (app/channels/outbox.py decide): from then
    # on the stages that make the answer skip themselves and the stored parts are sent.
    decided: bool = False
    decision_lock: threading.Lock = field(default_factory=threading.Lock)
    # Set by the inbox: True once a newer message of the user makes this attempt stale
    # (checked between stages, while waiting for the model, and atomically at the decision).
    superseded: Callable[[], bool] = field(default=lambda: False)
    may_abandon: bool = False  # this attempt may still be dropped for a newer message
    # Model calls made by this turn and the tokens they used (for /stats and the bench).
    usage: dict[str, int] = field(default_factory=dict)
    # Set by a stage that ends the turn early (the gate): the inbound status and reason the
    # inbox records; the remaining stages do not run.
    halt_status: str | None = None
    halt_reason: str | None = None

    def halt(self, inbound_status: str, reason: str) -> None:
        self.halt_status, self.halt_reason = inbound_status, reason

    @property
    def settings(self):
        return self.services.settings

    @property
    def user_text(self) -> str:
        """The whole turn as the user said it: every message's text, in order."""
        return "\n".join(t for t in (item.text for item in self.items) if t)

    @property
    def has_voice_note(self) -> bool:
        return any(item.kind == "audio" for item in self.items)

    @property
    def notices(self) -> list[str]:
        seen: list[str] = []
        for item in self.items:
            if item.notice and item.notice not in seen:
                seen.append(item.notice)
        return seen

    def check_superseded(self) -> None:
        """Raise ``TurnSuperseded`` when a newer message makes this attempt stale (never after the decision)."""
        if self.may_abandon and not self.decided and self.superseded():
            raise TurnSuperseded("a newer message arrived before the answer was decided")

    def abandonable(self, call: Callable[[], Any], poll_seconds: float = 0.05) -> Any:
        """``call()``, given up the moment the attempt goes stale (its result is then dropped).

        The call runs in a helper thread so that a burst's next message stops the wait at once
        instead of after the model's answer; without a way to go stale it runs inline.
        """
        if self.decided or not self.may_abandon:
            return call()
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["value"] = call()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="abandonable-call", daemon=True).start()
        while not done.wait(poll_seconds):
            self.check_superseded()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def elapsed(self) -> float:
        return time.monotonic() - self.started_monotonic

    def remaining_budget(self) -> float:
        """Seconds left of the turn's time budget (the promise of a reply within ~8 s)."""
        return self.settings.turn_budget_seconds - self.elapsed()
