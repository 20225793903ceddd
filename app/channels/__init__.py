"""The channels: how a message comes in and how a turn's reply parts leave the app.

``twilio`` is WhatsApp through Twilio: the inbound form (``twilio/inbound.py``), webhook
signatures, delivery status callbacks, the outbound send and split, media download.
``simulator`` is the dashboard's chat: its input becomes an ``Inbound``, its replies are
recorded instead of sent. ``outbox`` is the one way out: every part is written down before
it is sent, and sent once. ``channel_for`` picks a user's outbound channel.
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
