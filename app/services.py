"""The app's long-lived collaborators, built once per process from Settings.

``create_app`` makes one ``Services`` and keeps it in ``app.extensions["endrigo"]``; the
inbox and the pipeline receive it explicitly. Provider clients are built lazily so an
unused provider costs nothing at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from app.config import Settings
from app.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    started_at: float = 0.0
    inbox: object = None
    _observed_base_url: str | None = None

    def remember_base_url(self, app_url: str) -> None:
        """Without PUBLIC_BASE_URL, the app's root in a validly signed webhook's URL (origin and
        mount prefix, app.channels.twilio.signature.public_app_url) is our public address."""
        if self.settings.public_base_url:
            return
        self._observed_base_url = app_url.rstrip("/")

    def public_base_url(self) -> str | None:
        return self.settings.public_base_url or self._observed_base_url

    def status_callback_url(self, outbound_row_id: int | None = None) -> str | None:
        """Where Twilio reports delivery. The row id in the query lets a callback that arrives
        before we recorded the message's SID still find its row (Twilio signs the query too)."""
        base = self.public_base_url()
        if not base:
            return None
        url = f"{base}/webhook/whatsapp/status"
        return f"{url}?row={outbound_row_id}" if outbound_row_id is not None else url

    @cached_property
    def inbound_writer(self):
        from app.inbox.intake import InboundWriter

        return InboundWriter(self.db)

    @cached_property
    def openai(self):
        from app.clients.openai_client import OpenAIGateway
        from app.ops.limits import count_ai_call

        return OpenAIGateway(self.settings, on_call=lambda kind: count_ai_call(self.db))

    @cached_property
    def twilio(self):
        from app.clients.twilio_client import TwilioGateway

        return TwilioGateway(self.settings)

    @cached_property
    def knowledge(self):
        from app.knowledge import KnowledgeBase

        return KnowledgeBase.for_settings(self.settings, self.openai)

    @cached_property
    def storage(self):
        from app.clients.storage import build_storage

        return build_storage(self.settings)

    @cached_property
    def tts(self):
        from app.clients.elevenlabs_client import ElevenLabsGateway

        return ElevenLabsGateway(self.settings)

    @cached_property
    def realtime(self):
        """The Realtime gateway (speech to speech), or None without an OpenAI key."""
        if not self.settings.openai_api_key:
            return None
        from app.clients.openai_realtime import RealtimeGateway

        return RealtimeGateway(self.settings.openai_api_key, model=self.settings.openai_realtime_model,
                               websocket_base_url=self.settings.openai_realtime_url,
                               timeout=self.settings.realtime_timeout_seconds,
                               transcription_model=self.settings.openai_transcribe_model)

    @cached_property
    def provider_health(self):
        from app.ops.provider_health import ProviderHealth

        return ProviderHealth(self.db)


def current_services() -> Services:
    """The Services of the app handling the current request."""
    from flask import current_app

    return current_app.extensions["endrigo"]
