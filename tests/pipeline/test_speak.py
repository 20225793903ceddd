"""The speak stage (app/pipeline/speak.py) and the reply it leads to: a voice reply only when
enough of the turn's time budget is left for it; a long answer spoken in part, with the rest
sent as text after the voice note (app/pipeline/send.py)."""
from __future__ import annotations

import time

from app.db import utcnow
from app.pipeline import speak
from app.pipeline.context import TurnContext
from app.pipeline.speak import MAX_SPOKEN_CHARS, MIN_SECONDS_LEFT_FOR_VOICE
from app.turn import UserSnapshot
from tests.conftest import wait_for
from tests.fakes import audio_samples
from tests.pipeline.conftest import USER, finished, inbound, send_voice_note

TTS = "/v1/text-to-speech/"


def _context(app, answer: str, seconds_left: float) -> TurnContext:
    """A turn of a user who wants voice replies, with ``seconds_left`` of its budget to go."""
    services = app.extensions["endrigo"]
    user = UserSnapshot(id=1, phone="+5511999990001", channel="whatsapp", name=None, reply_mode="audio",
                        message_count=1, first_seen_at=utcnow())
    ctx = TurnContext(services=services, turn_id=1, user=user, items=[])
    ctx.answer_text = answer
    ctx.started_monotonic = time.monotonic() - (services.settings.turn_budget_seconds - seconds_left)
    return ctx


def test_a_voice_reply_is_made_only_with_enough_of_the_turn_budget_left(voice_app, elevenlabs_fake):
    app = voice_app(start_workers=False)
    late = _context(app, "Oi! Tudo bem com você?", MIN_SECONDS_LEFT_FOR_VOICE - 0.3)
    speak.run(late)
    assert (late.reply_kind, late.audio_bytes) == ("text", None)
    assert elevenlabs_fake.requests_to(TTS) == []  # no synthesis started that could not finish in time
    in_time = _context(app, "Oi! Tudo bem com você?", MIN_SECONDS_LEFT_FOR_VOICE + 1.5)
    speak.run(in_time)
    assert in_time.reply_kind == "audio" and in_time.audio_bytes.startswith(b"OggS")
    assert len(elevenlabs_fake.requests_to(TTS)) == 1


def test_a_voice_note_answered_late_in_its_budget_gets_a_text_reply(voice_app, twilio_fake, elevenlabs_fake):
    app = voice_app(turn_budget_seconds=MIN_SECONDS_LEFT_FOR_VOICE - 0.5)
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=30)
    assert inbound(app).status == "answered"
    assert elevenlabs_fake.requests_to(TTS) == []
    sent = [m for m in twilio_fake.sent if m["to"] == USER]
    assert len(sent) == 1 and not sent[0]["media_url"] and sent[0]["body"].startswith("[fake]")


def test_a_long_answer_is_spoken_in_part_and_the_rest_follows_as_text(voice_app, twilio_fake, openai_fake,
                                                                     elevenlabs_fake):
    answer = " ".join(f"Frase número {i} de uma resposta longa." for i in range(60))
    assert MAX_SPOKEN_CHARS < len(answer) < MAX_SPOKEN_CHARS + 1600
    openai_fake.queue_text(answer)
    app = voice_app()
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=30)
    spoken = elevenlabs_fake.requests_to(TTS)[0].json["text"]
    assert 0 < len(spoken) <= MAX_SPOKEN_CHARS
    sent = [m for m in twilio_fake.sent if m["to"] == USER]
    # The voice note first, then the words it did not say, as text; nothing said twice or lost.
    assert sent[0]["media_url"] and not sent[0]["body"]
    texts = [m["body"] for m in sent[1:]]
    assert texts and all(not m["media_url"] for m in sent[1:])
    assert " ".join([spoken] + texts) == answer
