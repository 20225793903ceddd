"""Voice notes end to end: signed webhook → download → FFmpeg → transcription → answer → voice reply."""
from __future__ import annotations

from sqlalchemy import select

from app.audio.formats import sniff_audio_type
from tests.conftest import post_signed, wait_for
from tests.fakes import audio_samples
from tests.pipeline.conftest import PATH, USER, finished, inbound, send_voice_note


def test_voice_note_gets_a_voice_reply_whose_url_serves_ogg_opus(voice_app, twilio_fake, openai_fake,
                                                                 elevenlabs_fake):
    app = voice_app()
    openai_fake.transcript_text = "Quais serviços a Endrigo Digital oferece?"
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(4.0, "24k"))
    wait_for(lambda: finished(app), timeout=30)

    row = inbound(app)
    assert row.status == "answered" and row.kind == "audio"
    assert row.transcription == "Quais serviços a Endrigo Digital oferece?"
    # Transcription request as OpenAI expects it: a file with an extension, the model, Portuguese.
    transcription = openai_fake.requests_to("/v1/audio/transcriptions")[0]
    filename = transcription.files["file"][0]
    assert filename.rsplit(".", 1)[-1] in {"ogg", "wav"}
    assert transcription.form["model"] == "gpt-transcribe" and transcription.form["language"] == "pt"
    assert "Endrigo" in transcription.form["prompt"]
    # The transcribed words reached the answer.
    response_request = openai_fake.requests_to("/v1/responses")[0]
    assert "Quais serviços a Endrigo Digital oferece?" in str(response_request.json["input"])
    # TTS with Endrigo's voice, model and an Opus format.
    tts = elevenlabs_fake.requests_to("/v1/text-to-speech/")[0]
    assert "SuM1a4mUYXCmWfwWYCx0" in tts.path and tts.json["model_id"] == "eleven_multilingual_v2"
    assert tts.query["output_format"].startswith("opus_")
    # One WhatsApp message with the audio, no caption; its URL serves OGG/Opus with the right type.
    sent = [m for m in twilio_fake.sent if m["to"] == USER]
    audio_messages = [m for m in sent if m["media_url"]]
    assert len(audio_messages) == 1 and not audio_messages[0]["body"]
    url = audio_messages[0]["media_url"][0] if isinstance(audio_messages[0]["media_url"], list) \
        else audio_messages[0]["media_url"]
    assert url.startswith("https://bot.example.com/media/")
    served = app.test_client().get(url.replace("https://bot.example.com", ""))
    assert served.status_code == 200 and served.mimetype == "audio/ogg"
    assert served.data[:4] == b"OggS" and sniff_audio_type(served.data[:96]) == "opus"
    # Temporary files of the turn are gone.
    wait_for(lambda: list(app.scratch.iterdir()) == [], timeout=5)  # removed right after the outcome is stored


def test_text_users_get_text_even_with_tts_configured(voice_app, twilio_fake, elevenlabs_fake):
    app = voice_app()
    post_signed(app.test_client(), PATH, twilio_fake.inbound_form(body="Oi, tudo bem?"), twilio_fake.auth_token)
    wait_for(lambda: finished(app), timeout=20)
    assert elevenlabs_fake.requests_to("/v1/text-to-speech/") == []
    assert all(not m["media_url"] for m in twilio_fake.sent)


def test_silent_note_is_answered_without_calling_openai(voice_app, twilio_fake, openai_fake):
    app = voice_app()
    send_voice_note(app, twilio_fake, audio_samples.silent_ogg(3.0))
    wait_for(lambda: finished(app), timeout=20)
    assert openai_fake.requests_to("/v1/audio/transcriptions") == []
    assert openai_fake.requests_to("/v1/responses") == []
    assert "Não ouvi nada" in twilio_fake.sent[0]["body"]


def test_truncated_note_gets_a_polite_retry_request(voice_app, twilio_fake, openai_fake):
    app = voice_app()
    send_voice_note(app, twilio_fake, audio_samples.truncated(audio_samples.speech_like_ogg(4.0), 0.4))
    wait_for(lambda: finished(app), timeout=20)
    assert "não consegui ouvir" in twilio_fake.sent[0]["body"].lower()
    assert openai_fake.requests_to("/v1/audio/transcriptions") == []
    wait_for(lambda: list(app.scratch.iterdir()) == [], timeout=5)  # removed right after the outcome is stored


def test_an_image_is_not_downloaded_and_gets_a_notice_while_its_text_is_answered(voice_app, twilio_fake,
                                                                              openai_fake):
    app = voice_app()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    form = twilio_fake.inbound_form(body="O que acha desta arte?", media=(png, "image/png"), MessageType="image")
    post_signed(app.test_client(), PATH, form, twilio_fake.auth_token)
    wait_for(lambda: finished(app), timeout=20)
    assert twilio_fake.requests_to("/Media/") == []  # never fetched
    body = twilio_fake.sent[0]["body"]
    assert "Imagens" in body and "[fake] O que acha desta arte?" in body
    assert inbound(app).kind == "image"


def test_media_on_a_host_outside_the_allowed_list_is_never_requested(voice_app, twilio_fake):
    app = voice_app(media_allowed_hosts=("api.twilio.com",), media_allow_private_hosts=False)
    url = twilio_fake.add_media(audio_samples.speech_like_ogg(2.0), "audio/ogg")
    form = twilio_fake.inbound_form(body="", media=(url, "audio/ogg"), MessageType="audio")
    post_signed(app.test_client(), PATH, form, twilio_fake.auth_token)
    wait_for(lambda: finished(app), timeout=20)
    assert twilio_fake.requests_to("/Media/") == []
    assert "baixar" in twilio_fake.sent[0]["body"]


def test_tts_quota_exceeded_falls_back_to_text(voice_app, twilio_fake, openai_fake, elevenlabs_fake):
    app = voice_app()
    elevenlabs_fake.quota_exceeded()
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=20)
    sent = twilio_fake.sent
    assert len(sent) == 1 and not sent[0]["media_url"] and sent[0]["body"].startswith("[fake]")
    health = app.extensions["endrigo"].provider_health.snapshot()
    assert health["elevenlabs"]["state"] == "degraded" and "xi-test-key" not in str(health)


def test_failed_voice_delivery_is_followed_once_by_the_same_answer_as_text(voice_app, twilio_fake, openai_fake):
    app = voice_app()
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=30)
    audio_message = next(m for m in twilio_fake.sent if m["media_url"])
    client = app.test_client()
    for _ in range(2):  # Twilio may repeat the callback; the text goes out once
        form = {"MessageSid": audio_message["sid"], "MessageStatus": "failed", "ErrorCode": "63019",
                "AccountSid": twilio_fake.account_sid}
        assert post_signed(client, "/webhook/whatsapp/status", form, twilio_fake.auth_token).status_code == 200
    texts = wait_for(lambda: [m for m in twilio_fake.sent if not m["media_url"]])
    import time

    time.sleep(0.3)
    texts = [m for m in twilio_fake.sent if not m["media_url"]]
    assert len(texts) == 1 and texts[0]["body"].startswith("[fake]")


def test_reply_preference_audio_gives_voice_replies_to_text(voice_app, twilio_fake, elevenlabs_fake):
    app = voice_app()
    from app.models import User

    post_signed(app.test_client(), PATH, twilio_fake.inbound_form(body="primeira"), twilio_fake.auth_token)
    wait_for(lambda: finished(app), timeout=20)
    with app.extensions["endrigo"].db.session() as session:
        session.scalar(select(User)).reply_mode = "audio"
    post_signed(app.test_client(), PATH, twilio_fake.inbound_form(body="segunda"), twilio_fake.auth_token)
    wait_for(lambda: any(m["media_url"] for m in twilio_fake.sent), timeout=20)
    assert len(elevenlabs_fake.requests_to("/v1/text-to-speech/")) == 1


def test_a_file_whose_header_lies_is_not_transcribed(voice_app, twilio_fake, openai_fake):
    app = voice_app()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 4000
    send_voice_note(app, twilio_fake, png, content_type="audio/ogg")
    wait_for(lambda: finished(app), timeout=20)
    assert openai_fake.requests_to("/v1/audio/transcriptions") == []
    assert "não consegui ouvir" in twilio_fake.sent[0]["body"].lower()
    wait_for(lambda: list(app.scratch.iterdir()) == [], timeout=5)  # removed right after the outcome is stored


def test_a_20_mb_file_is_refused_while_streaming(voice_app, twilio_fake, openai_fake):
    app = voice_app()
    send_voice_note(app, twilio_fake, audio_samples.big_blob(20 * 1024 * 1024), content_type="audio/ogg")
    wait_for(lambda: finished(app), timeout=30)
    assert openai_fake.requests_to("/v1/audio/transcriptions") == []
    assert "grande demais" in twilio_fake.sent[0]["body"]
    wait_for(lambda: list(app.scratch.iterdir()) == [], timeout=5)  # removed right after the outcome is stored


def test_unusable_opus_from_elevenlabs_is_replaced_by_our_own_encoding(voice_app, twilio_fake, openai_fake,
                                                                       elevenlabs_fake):
    app = voice_app()
    # ElevenLabs answers 200 with bytes that are not OGG: we ask for PCM and encode it with FFmpeg.
    elevenlabs_fake.fail_next(status=200, raw_body=b"ID3 this is not an ogg file" * 10,
                              headers={"Content-Type": "audio/ogg"})
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=30)
    formats = [r.query["output_format"] for r in elevenlabs_fake.requests_to("/v1/text-to-speech/")]
    assert formats == ["opus_48000_32", "pcm_24000"]
    audio_message = next(m for m in twilio_fake.sent if m["media_url"])
    url = audio_message["media_url"][0] if isinstance(audio_message["media_url"], list) \
        else audio_message["media_url"]
    served = app.test_client().get(url.replace("https://bot.example.com", ""))
    assert served.mimetype == "audio/ogg" and sniff_audio_type(served.data[:96]) == "opus"


def _texts_after_audio(twilio_fake):
    sent = [m for m in twilio_fake.sent if m["to"] == USER]
    first_audio = next(i for i, m in enumerate(sent) if m["media_url"])
    return [m["body"] for m in sent[first_audio + 1:] if not m["media_url"]]


def test_links_emails_and_phones_of_a_spoken_answer_follow_the_voice_note_as_text(voice_app, twilio_fake,
                                                                                 openai_fake, elevenlabs_fake):
    app = voice_app()
    openai_fake.queue_text("Claro! Veja os detalhes em https://endrigo.example/servicos. Se preferir, escreva "
                           "para contato@endrigo.example ou ligue para (11) 98765-4321.")
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=30)
    spoken = elevenlabs_fake.requests_to("/v1/text-to-speech/")[0].json["text"]
    assert "https://" not in spoken and "o link que te enviei por escrito" in spoken
    texts = _texts_after_audio(twilio_fake)
    assert len(texts) == 1
    for item in ("https://endrigo.example/servicos", "contato@endrigo.example", "(11) 98765-4321"):
        assert item in texts[0]


def test_the_unspoken_rest_keeps_its_links_and_the_spoken_links_are_sent_too(voice_app, twilio_fake, openai_fake,
                                                                              elevenlabs_fake):
    app = voice_app()
    first = "O primeiro passo é uma conversa de diagnóstico, veja https://endrigo.example/diagnostico. "
    filler = "Depois disso a equipe prepara uma proposta com escopo, prazos e investimento para o seu caso. " * 12
    last = "O contrato está em https://endrigo.example/contrato."
    openai_fake.queue_text(first + filler + last)
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=30)
    spoken = elevenlabs_fake.requests_to("/v1/text-to-speech/")[0].json["text"]
    assert "o link que te enviei por escrito" in spoken and "contrato está" not in spoken
    text = "\n\n".join(_texts_after_audio(twilio_fake))
    assert "https://endrigo.example/diagnostico" in text  # said as "o link que te enviei por escrito"
    assert "O contrato está em https://endrigo.example/contrato." in text  # the rest, as written
    assert "o link que te enviei por escrito" not in text
