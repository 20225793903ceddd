"""The download stage (app/pipeline/download.py): ``upload:`` URLs name files on our own disk,
so only simulated users may use them; from WhatsApp such a URL gets a notice and is never read."""
from __future__ import annotations

from app.channels.simulator.inbound import UPLOAD_SCHEME, uploads_dir
from app.pipeline import notices
from tests.conftest import post_signed, wait_for
from tests.fakes import audio_samples
from tests.pipeline.conftest import PATH, USER, finished, inbound


def test_a_whatsapp_user_cannot_point_at_a_simulator_upload(voice_app, twilio_fake, openai_fake):
    app = voice_app()
    folder = uploads_dir(app.extensions["endrigo"].settings)
    folder.mkdir(parents=True, exist_ok=True)
    name = "A" * 24 + ".ogg"
    (folder / name).write_bytes(audio_samples.speech_like_ogg(3.0))  # a real, readable voice note
    form = twilio_fake.inbound_form(body="", NumMedia="1", MediaUrl0=UPLOAD_SCHEME + name,
                                    MediaContentType0="audio/ogg", MessageType="audio")
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    wait_for(lambda: finished(app), timeout=30)
    row = inbound(app)
    assert row.kind == "audio" and row.transcription is None
    assert openai_fake.requests_to("/v1/audio/transcriptions") == []
    sent = [m for m in twilio_fake.sent if m["to"] == USER]
    assert sent and notices.MEDIA_UNAVAILABLE in sent[0]["body"]
