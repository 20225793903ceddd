"""Outbound channels: how a turn's reply parts leave the app.

``twilio`` sends through Twilio's REST API (real WhatsApp users); ``simulator`` records
replies for the dashboard's chat simulator. Each channel keeps its input and output
together (``twilio/inbound.py`` reads Twilio's webhook form). ``outbox`` is the one way out:
every part is written down before it is sent, and sent once.
"""
from __future__ import annotations

from typing import Protocol

from app.clients.twilio_client import SentMessage
from app.turn import OutboundPart, UserSnapshot


class Channel(Protocol):
    name: str
    max_body_chars: int

    def send_part(self, user: UserSnapshot, part: OutboundPart, row_id: int) -> SentMessage: ...

    def find_sent(self, user: UserSnapshot, part: OutboundPart, since) -> list[SentMessage]: ...


def channel_for(services, user: UserSnapshot) -> Channel:
    from app.channels.simulator.outbound import SimulatorChannel
    from app.channels.twilio.outbound import TwilioChannel

    if user.channel == "simulator":
        return SimulatorChannel()
    return TwilioChannel(services)
