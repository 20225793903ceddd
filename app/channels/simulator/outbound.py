"""The simulator channel: replies to the dashboard's simulated users are only recorded.

The simulator runs the exact pipeline; this channel stands where Twilio would, so the
operator sees every reply (text and audio) on the page and nothing leaves the app.
"""
from __future__ import annotations

import secrets

from app.channels.twilio.outbound import MAX_BODY_CHARS
from app.clients.twilio_client import SentMessage
from app.turn import OutboundPart, UserSnapshot


class SimulatorChannel:
    name = "simulator"
    # Same limit as WhatsApp, so the simulator shows the split a real user would get.
    max_body_chars = MAX_BODY_CHARS

    def send_part(self, user: UserSnapshot, part: OutboundPart, row_id: int) -> SentMessage:
        return SentMessage(sid="SIM" + secrets.token_hex(16), status="delivered")

    def find_sent(self, user: UserSnapshot, part: OutboundPart, since) -> list[SentMessage]:
        # Recording a simulated reply cannot half-happen: there is never an unknown outcome.
        return []
