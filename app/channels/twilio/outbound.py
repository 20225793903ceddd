"""The Twilio WhatsApp channel: split long bodies, send each part through the REST API.

WhatsApp bodies are limited to 1,600 characters (Twilio error 21617 beyond). Long text
is split at paragraph, then sentence, then word boundaries, so every part reads well.
"""
from __future__ import annotations

import re

from app.clients.twilio_client import SentMessage
from app.turn import OutboundPart, UserSnapshot

MAX_BODY_CHARS = 1600

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_message(text: str, limit: int = MAX_BODY_CHARS) -> list[str]:
    """Split ``text`` into ordered parts of at most ``limit`` characters, at the best boundary."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    current = ""
    for separator, unit in _units(text, limit):
        if current and len(current) + len(separator) + len(unit) > limit:
            parts.append(current)
            current = unit
        else:
            current = f"{current}{separator}{unit}" if current else unit
    if current:
        parts.append(current)
    return parts


def _units(text: str, limit: int) -> list[tuple[str, str]]:
    """(separator, unit) pairs no longer than ``limit``: paragraphs, else sentences, else words.

    The separator is what re-joins the unit to the previous one inside a part: a blank
    line between paragraphs, a space inside one.
    """
    units: list[tuple[str, str]] = []
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    for paragraph in paragraphs:
        pieces = [paragraph] if len(paragraph) <= limit else _split_sentences(paragraph, limit)
        for index, piece in enumerate(pieces):
            units.append(("\n\n" if index == 0 else " ", piece))
    return units


def _split_sentences(paragraph: str, limit: int) -> list[str]:
    out: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        if len(sentence) <= limit:
            out.append(sentence)
        else:
            out.extend(_split_words(sentence, limit))
    return out


def _split_words(sentence: str, limit: int) -> list[str]:
    out: list[str] = []
    current = ""
    for word in sentence.split():
        while len(word) > limit:  # a "word" longer than a message (a URL run wild)
            if current:
                out.append(current)
                current = ""
            out.append(word[:limit])
            word = word[limit:]
        if current and len(current) + 1 + len(word) > limit:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


class TwilioChannel:
    name = "whatsapp"
    max_body_chars = MAX_BODY_CHARS

    def __init__(self, services):
        self.services = services

    def send_part(self, user: UserSnapshot, part: OutboundPart, row_id: int) -> SentMessage:
        callback = self.services.status_callback_url(row_id)
        return self.services.twilio.send(
            f"whatsapp:{user.phone}",
            body=None if part.content_sid else part.body,  # a template carries its own text
            media_url=part.media_url,
            status_callback=callback,
            content_sid=part.content_sid,
            content_variables=part.content_variables,
        )

    def find_sent(self, user: UserSnapshot, part: OutboundPart, since) -> list[SentMessage]:
        """Messages Twilio holds that this part's send may have created (newest first)."""
        return self.services.twilio.find_sent(f"whatsapp:{user.phone}", since=since, body=part.body,
                                              with_media=bool(part.media_url))
