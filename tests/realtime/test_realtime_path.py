"""The realtime voice path end to end: signed webhook → EndrigoRealtimeAudioClone → the real openai SDK
against the Realtime emulator → OGG/Opus voice note → the outbox → the Twilio emulator; and its fallback
to the main pipeline (OpenAI + ElevenLabs emulators), counted at the Twilio emulator."""
from __future__ import annotations

import logging
import re
import subprocess
import time

import pytest
from sqlalchemy import select

from app.audio.formats import sniff_audio_type
from app.audio.pcm import duration_seconds, to_pcm16_24k, trim_silence
from app.models import Lead, Message, RealtimeSession, Turn
from app.pipeline import notices, realtime
from app.pipeline.answer import FALLBACK_HANDOFF
from app.pipeline.context import InboundItem, TurnContext
from app.turn import REALTIME_PATH, UserSnapshot
from tests.conftest import post_signed, wait_for
from tests.fakes import audio_samples
from tests.fakes.audio_samples import SPEECH_EXPR, ffmpeg_exe, render
from tests.fakes.realtime_fake import closed_port_url

RT = "/webhook/whatsapp/realtime"
USER = "whatsapp:+5511999990001"


@pytest.fixture
def rt_app(make_app, openai_fake, elevenlabs_fake, realtime_fake):
    """Every provider on its emulator; the Realtime emulator takes the same key as the OpenAI one."""
    original_key = realtime_fake.api_key
    realtime_fake.api_key = openai_fake.api_key

    def factory(**overrides):
        values = dict(
            openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url, openai_max_retries=0,
            openai_realtime_url=realtime_fake.ws_base_url, realtime_timeout_seconds=5.0,
            elevenlabs_api_key=elevenlabs_fake.api_key, elevenlabs_base_url=elevenlabs_fake.base_url,
            media_allowed_hosts=("127.0.0.1", "localhost"),
        )
        values.update(overrides)
        return make_app(**values)

    yield factory
    realtime_fake.api_key = original_key


def padded_note(before=0.8, voiced=2.5, after=1.0) -> bytes:
    """A voice note with silence around the speech (the trim must cut it)."""
    expr = f"if(between(t,{before},{before + voiced}),{SPEECH_EXPR},0)"
    return render(expr, before + voiced + after, "ogg_opus", 48000, "24k")


def post_note(app, twilio_fake, audio: bytes, path=RT, body="", **extra):
    form = twilio_fake.inbound_form(body=body, media=(audio, "audio/ogg"), **extra)
    response = post_signed(app.test_client(), path, form, twilio_fake.auth_token)
    assert response.status_code == 200
    return form


def turns_done(app, count=1):
    with app.extensions["endrigo"].db.session() as session:
        rows = list(session.scalars(select(Message.status).where(Message.direction == "in")))
    return len(rows) >= count and all(status in ("answered", "failed") for status in rows)


def settle(app, count=1, timeout=30):
    wait_for(lambda: turns_done(app, count), timeout=timeout)
    time.sleep(0.3)  # nothing else may arrive at Twilio afterwards


def sessions(app):
    with app.extensions["endrigo"].db.session() as session:
        return [(r.outcome, r.reason) for r in session.scalars(select(RealtimeSession).order_by(RealtimeSession.id))]


def replies(twilio_fake):
    return [m for m in twilio_fake.sent if m["to"] == USER]


def media_url(message) -> str:
    url = message["media_url"]
    return url[0] if isinstance(url, list) else url


def decoded_seconds(data: bytes, tmp_path) -> float:
    """Seconds of audio FFmpeg decodes from ``data`` (the imageio-ffmpeg wheel ships no ffprobe)."""
    path = tmp_path / "reply.ogg"
    path.write_bytes(data)
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-f", "s16le", "-ac", "1",
                             "-ar", "24000", "pipe:1"], capture_output=True, timeout=30, check=True)
    return len(result.stdout) / 2 / 24000


# ---- the happy path ------------------------------------------------------------------------------

def test_a_voice_note_on_the_realtime_webhook_is_answered_by_a_realtime_voice_note(
        rt_app, twilio_fake, openai_fake, elevenlabs_fake, realtime_fake, tmp_path):
    app = rt_app()
    realtime_fake.answer_seconds = 2.4
    note = padded_note()
    post_note(app, twilio_fake, note)
    settle(app)

    # One reply: a voice note, no caption, whose URL serves OGG/Opus as long as the PCM the emulator sent.
    sent = replies(twilio_fake)
    assert len(sent) == 1 and sent[0]["media_url"] and not sent[0]["body"]
    served = app.test_client().get(media_url(sent[0]).replace("https://bot.example.com", ""))
    assert served.status_code == 200 and served.mimetype == "audio/ogg"
    assert served.data[:4] == b"OggS" and sniff_audio_type(served.data[:96]) == "opus"
    assert decoded_seconds(served.data, tmp_path) == pytest.approx(2.4, abs=0.03)
    served.close()
    # The emulator heard the note after the silence trim: what our trim keeps, not the 4.3 s sent.
    note_path = tmp_path / "note.ogg"
    note_path.write_bytes(note)
    expected = duration_seconds(trim_silence(to_pcm16_24k(note_path)))
    assert realtime_fake.committed_seconds == [pytest.approx(expected, abs=0.001)]
    assert expected < 3.5
    # Nothing went through the main pipeline's providers.
    assert openai_fake.requests_to("/v1/audio/transcriptions") == []
    assert openai_fake.requests_to("/v1/responses") == []
    assert elevenlabs_fake.requests_to("/v1/text-to-speech/") == []
    # The session: model, key, persona, voice, the six tools.
    handshake = realtime_fake.handshakes[-1]
    assert handshake["query"] == {"model": "gpt-realtime-2"}
    assert handshake["headers"]["authorization"] == f"Bearer {openai_fake.api_key}"
    session = realtime_fake.sessions[-1]
    assert "Endrigo" in session["instructions"] and "search_knowledge" in session["instructions"]
    assert session["audio"]["output"]["voice"] == "marin" and session["output_modalities"] == ["audio"]
    assert {tool["name"] for tool in session["tools"]} == {
        "search_knowledge", "get_user_profile", "update_user_profile", "capture_lead", "request_human_handoff",
        "get_current_datetime"}
    # Stored: the user's transcription, our transcript as the answer, the session as a success.
    with app.extensions["endrigo"].db.session() as db:
        inbound = db.scalar(select(Message).where(Message.direction == "in"))
        turn = db.scalar(select(Turn))
        out = db.scalar(select(Message).where(Message.direction == "out"))
        assert inbound.extra["path"] == REALTIME_PATH and inbound.status == "answered"
        assert inbound.transcription == realtime_fake.input_transcript
        assert turn.reply_text == realtime_fake.output_text and turn.reply_kind == "audio"
        assert out.kind == "audio" and out.body == realtime_fake.output_text
        assert "realtime" in turn.timings and "transcribe" not in turn.timings
    assert sessions(app) == [("answered", None)]


def test_the_next_realtime_turn_carries_the_history_from_our_database(rt_app, twilio_fake, realtime_fake):
    app = rt_app()
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0))
    settle(app)
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.5))
    settle(app, count=2)
    history = [e["item"] for e in realtime_fake.events_of("conversation.item.create")
               if e["item"]["type"] == "message"]
    assert [(i["role"], i["content"][0]["text"]) for i in history] == [
        ("user", realtime_fake.input_transcript), ("assistant", realtime_fake.output_text)]
    assert len([m for m in replies(twilio_fake) if m["media_url"]]) == 2


def test_two_voice_notes_in_one_turn_make_one_session_and_one_reply(rt_app, twilio_fake, realtime_fake, tmp_path):
    app = rt_app(coalesce_window_seconds=1.0)
    first, second = padded_note(0.5, 2.0, 0.8), audio_samples.speech_like_ogg(1.5)
    post_note(app, twilio_fake, first)
    post_note(app, twilio_fake, second)
    settle(app, count=2)
    expected = 0.0
    for n, note in enumerate((first, second)):
        path = tmp_path / f"n{n}.ogg"
        path.write_bytes(note)
        expected += duration_seconds(trim_silence(to_pcm16_24k(path)))
    # Both notes, trimmed, with the gap between them, in the one session that answered.
    assert realtime_fake.committed_seconds[-1] == pytest.approx(expected + realtime.GAP_BETWEEN_NOTES_SECONDS,
                                                                abs=0.001)
    sent = replies(twilio_fake)
    assert len(sent) == 1 and sent[0]["media_url"]
    with app.extensions["endrigo"].db.session() as db:
        assert len(set(db.scalars(select(Message.turn_id).where(Message.direction == "in")))) == 1


def test_a_capture_lead_call_inside_the_session_stores_the_lead(rt_app, twilio_fake, realtime_fake):
    app = rt_app()
    realtime_fake.tool_calls = [{"name": "capture_lead", "arguments": {
        "name": "Ana Souza", "interest": "mentoria de marketing", "email": "ana@example.com"}}]
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.5))
    settle(app)

    with app.extensions["endrigo"].db.session() as db:
        lead = db.scalar(select(Lead))
        turn = db.scalar(select(Turn))
        assert lead is not None and lead.name == "Ana Souza" and lead.email == "ana@example.com"
        assert [c["name"] for c in turn.tool_calls] == ["capture_lead"] and turn.tool_calls[0]["ok"] is True
        assert turn.tool_calls[0]["round"] == 1 and turn.tool_calls[0]["path"] == "realtime"
    assert len(realtime_fake.tool_outputs) == 1 and "error" not in realtime_fake.tool_outputs[0]["output"]
    assert len(replies(twilio_fake)) == 1 and replies(twilio_fake)[0]["media_url"]


def test_a_handoff_asked_for_in_a_voice_conversation_opens_and_survives_a_dropped_session(
        rt_app, twilio_fake, openai_fake, elevenlabs_fake, realtime_fake):
    from app.models import Handoff

    app = rt_app()
    realtime_fake.tool_calls = [{"name": "request_human_handoff", "arguments": {"reason": "quer falar com alguém"}}]
    realtime_fake.fault = "close_mid_response"  # the tool round completes, the spoken answer is cut
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.5))
    settle(app)

    with app.extensions["endrigo"].db.session() as db:
        handoff = db.scalar(select(Handoff))
        turn = db.scalar(select(Turn))
        assert handoff is not None and handoff.status == "open" and handoff.reason == "quer falar com alguém"
        # The fallback does not ask the model again (it would find the handoff open): it confirms it.
        assert turn.reply_text == FALLBACK_HANDOFF
    assert openai_fake.requests_to("/v1/responses") == []
    assert len(replies(twilio_fake)) == 1 and sessions(app) == [("fallback", "closed")]
    tts = elevenlabs_fake.requests_to("/v1/text-to-speech/")
    assert len(tts) == 1 and "equipe" in tts[0].json["text"]


def test_with_realtime_voice_elevenlabs_the_session_answers_in_text_spoken_by_the_clone(
        rt_app, twilio_fake, openai_fake, elevenlabs_fake, realtime_fake):
    app = rt_app(realtime_voice="elevenlabs")
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.5))
    settle(app)

    assert realtime_fake.sessions[-1]["output_modalities"] == ["text"]
    tts = elevenlabs_fake.requests_to("/v1/text-to-speech/")
    assert len(tts) == 1 and "SuM1a4mUYXCmWfwWYCx0" in tts[0].path
    assert tts[0].json["text"].startswith("Olá! A mentoria custa")
    assert openai_fake.requests_to("/v1/responses") == []
    sent = replies(twilio_fake)
    assert len(sent) == 1 and sent[0]["media_url"]
    assert sessions(app) == [("answered", None)]


def test_a_user_who_prefers_text_gets_the_realtime_answer_as_text(rt_app, twilio_fake, realtime_fake):
    app = rt_app()
    post_signed(app.test_client(), RT, twilio_fake.inbound_form(body="primeira"), twilio_fake.auth_token)
    settle(app)
    from app.models import User

    with app.extensions["endrigo"].db.session() as db:
        db.scalar(select(User)).reply_mode = "text"
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0))
    settle(app, count=2)
    assert realtime_fake.sessions[-1]["output_modalities"] == ["text"]
    last = replies(twilio_fake)[-1]
    assert not last["media_url"] and last["body"] == realtime_fake.output_text


def test_a_silent_note_opens_no_session_and_gets_todays_notice(rt_app, twilio_fake, openai_fake, realtime_fake):
    app = rt_app()
    post_note(app, twilio_fake, audio_samples.silent_ogg(3.0))
    settle(app)
    assert realtime_fake.handshakes == []
    assert openai_fake.requests_to("/v1/responses") == []
    sent = replies(twilio_fake)
    assert len(sent) == 1 and sent[0]["body"] == "Não ouvi nada no seu áudio. Pode gravar de novo?"


# ---- fallback: exactly one answer, from the main pipeline ------------------------------------------

FAULTS = [
    ("handshake_500", {}, "connect"),
    ("error_event", {}, "error_event"),
    ("error_and_close", {}, "error_event"),
    ("stall", {"realtime_timeout_seconds": 1.5}, "timeout"),
    ("close_mid_response", {}, "closed"),
    ("refused", {}, "connect"),
    ("bad_key", {}, "auth"),
    ("no_audio", {}, "empty_audio"),
]


@pytest.mark.parametrize("fault,overrides,reason", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_realtime_failure_ends_with_exactly_one_answer_from_the_main_pipeline(
        rt_app, twilio_fake, openai_fake, elevenlabs_fake, realtime_fake, fault, overrides, reason):
    if fault == "refused":
        overrides = {"openai_realtime_url": closed_port_url()}
    elif fault == "bad_key":
        realtime_fake.api_key = "sk-another-key-000000000"
    elif fault == "no_audio":
        realtime_fake.answer_seconds = 0
    else:
        realtime_fake.fault = fault
    app = rt_app(**overrides)
    openai_fake.transcript_text = "Quanto custa a mentoria?"
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.5))
    settle(app)

    sent = replies(twilio_fake)
    assert len(sent) == 1, sent
    # The main pipeline answered: one transcription, one answer with the transcribed words.
    assert len(openai_fake.requests_to("/v1/audio/transcriptions")) == 1
    answers = openai_fake.requests_to("/v1/responses")
    assert len(answers) == 1 and "Quanto custa a mentoria?" in str(answers[0].json["input"])
    assert sessions(app) == [("fallback", reason)]
    with app.extensions["endrigo"].db.session() as db:
        turn = db.scalar(select(Turn))
        assert turn.status == "answered" and turn.reply_text.startswith("[fake]")
        assert db.scalar(select(Message).where(Message.direction == "in")).transcription == "Quanto custa a mentoria?"
    health = app.extensions["endrigo"].provider_health.snapshot()
    assert health["realtime"]["state"] == "degraded" and openai_fake.api_key not in str(health)


def test_a_note_ffmpeg_cannot_decode_falls_back_once_and_gets_todays_notice(rt_app, twilio_fake, openai_fake,
                                                                           realtime_fake):
    app = rt_app()
    post_note(app, twilio_fake, audio_samples.truncated(audio_samples.speech_like_ogg(4.0), 0.4))
    settle(app)
    assert realtime_fake.handshakes == []
    sent = replies(twilio_fake)
    assert len(sent) == 1 and "não consegui ouvir" in sent[0]["body"].lower()
    assert sessions(app) == [("fallback", "conversion")]


def test_a_retried_turn_does_not_try_the_realtime_path_again(rt_app, twilio_fake, openai_fake, realtime_fake):
    app = rt_app(retry_backoff_seconds=(0.2, 0.2))
    realtime_fake.fault = "error_event"
    openai_fake.fail_next(500, times=1, path_contains="/v1/responses")  # the fallback's first answer fails
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.5))
    wait_for(lambda: any(m["media_url"] for m in replies(twilio_fake)), timeout=30)
    settle(app)
    assert len(realtime_fake.handshakes) == 1  # the retry went straight to the main pipeline
    assert sessions(app) == [("fallback", "error_event")]
    sent = replies(twilio_fake)
    assert [m["body"] for m in sent[:1]] == [notices.HOLDING] and len(sent) == 2 and sent[1]["media_url"]
    assert len(openai_fake.requests_to("/v1/responses")) == 2


def test_a_failed_send_after_the_decision_resends_the_stored_voice_note_without_a_new_session(
        rt_app, twilio_fake, realtime_fake):
    app = rt_app(retry_backoff_seconds=(0.2, 0.2))
    twilio_fake.fail_next(500, times=1, path_contains="/Messages.json")
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0))
    wait_for(lambda: any(m["media_url"] for m in replies(twilio_fake)), timeout=30)
    settle(app)
    assert len(realtime_fake.handshakes) == 1 and sessions(app) == [("answered", None)]
    assert len([m for m in replies(twilio_fake) if m["media_url"]]) == 1


def test_an_attempt_given_up_before_the_decision_is_recorded_and_the_retry_says_the_same_words(
        rt_app, twilio_fake, realtime_fake, elevenlabs_fake, monkeypatch):
    from app.pipeline import send

    real_decide, calls = send.decide, []

    def decide_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(send, "decide", decide_failing_once)
    app = rt_app(retry_backoff_seconds=(0.2, 0.2))
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0))
    wait_for(lambda: any(m["media_url"] for m in replies(twilio_fake)), timeout=30)
    settle(app)
    # The inbox kept the answer's words: the retry speaks them (ElevenLabs) without a second session.
    assert sessions(app) == [("abandoned", None)] and len(realtime_fake.handshakes) == 1
    assert len([m for m in replies(twilio_fake) if m["media_url"]]) == 1
    assert elevenlabs_fake.requests_to("/v1/text-to-speech/")[0].json["text"].startswith("Olá! A mentoria")
    with app.extensions["endrigo"].db.session() as db:
        assert db.scalar(select(Turn.reply_text)) == realtime_fake.output_text


# ---- what goes where -----------------------------------------------------------------------------

def test_text_and_audio_together_go_through_the_main_pipeline(rt_app, twilio_fake, openai_fake, realtime_fake):
    app = rt_app(coalesce_window_seconds=1.0)
    openai_fake.transcript_text = "e quanto custa?"
    post_signed(app.test_client(), RT, twilio_fake.inbound_form(body="Oi, tenho uma dúvida"),
                twilio_fake.auth_token)
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0))
    settle(app, count=2)
    answers = openai_fake.requests_to("/v1/responses")
    assert answers and "Oi, tenho uma dúvida" in str(answers[-1].json["input"])
    assert "e quanto custa?" in str(answers[-1].json["input"])
    assert not any(outcome == "answered" for outcome, _ in sessions(app))
    assert len(replies(twilio_fake)) == 1


def _ctx(services, items):
    user = UserSnapshot(id=1, phone="+5511999990001", channel="whatsapp", name=None, reply_mode="auto",
                        message_count=1, first_seen_at=None)
    return TurnContext(services=services, turn_id=10**6, user=user, items=items)


def _note(path=REALTIME_PATH, body=None, kind="audio", media="https://api.twilio.com/x"):
    return InboundItem(message_id=1, kind=kind, body=body, media_url=media,
                       extra={"path": path} if path else {})


def test_only_turns_of_realtime_voice_notes_without_text_are_eligible(rt_app, make_app):
    services = rt_app(start_workers=False).extensions["endrigo"]
    assert realtime.eligible(_ctx(services, [_note(), _note()]))
    assert not realtime.eligible(_ctx(services, [_note(), _note(kind="text", media=None, body="oi")]))
    assert not realtime.eligible(_ctx(services, [_note(body="legenda")]))
    assert not realtime.eligible(_ctx(services, [_note(path=None)]))  # came in on /webhook/whatsapp
    assert not realtime.eligible(_ctx(services, [_note(), _note(path=None)]))
    assert not realtime.eligible(_ctx(services, [_note(kind="image")]))
    assert not realtime.eligible(_ctx(services, []))
    decided = _ctx(services, [_note()])
    decided.decided = True
    assert not realtime.eligible(decided)
    offline = make_app(start_workers=False).extensions["endrigo"]  # no OpenAI key: no gateway
    assert offline.realtime is None and not realtime.eligible(_ctx(offline, [_note()]))


def test_a_voice_note_on_the_main_webhook_never_opens_a_session(rt_app, twilio_fake, realtime_fake, openai_fake):
    app = rt_app()
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0), path="/webhook/whatsapp")
    settle(app)
    assert realtime_fake.handshakes == [] and len(openai_fake.requests_to("/v1/responses")) == 1


# ---- the realtime webhook's ingest guarantees ------------------------------------------------------

def test_the_realtime_webhook_checks_the_signature_and_stores_each_sid_once(rt_app, twilio_fake):
    app = rt_app(start_workers=False)
    client = app.test_client()
    form = twilio_fake.inbound_form(body="Oi")
    assert client.post(RT, data=form).status_code == 403
    assert client.post(RT, data=form, headers={"X-Twilio-Signature": "bad"}).status_code == 403
    for _ in range(2):
        response = post_signed(client, RT, form, twilio_fake.auth_token)
        assert response.status_code == 200 and b"<Response/>" in response.data
    bad = twilio_fake.inbound_form(body="Oi")
    bad["MessageSid"] = bad["SmsMessageSid"] = "not-a-sid"
    assert post_signed(client, RT, bad, twilio_fake.auth_token).status_code == 400
    with app.extensions["endrigo"].db.session() as db:
        rows = list(db.scalars(select(Message)))
        assert len(rows) == 1 and rows[0].extra["path"] == REALTIME_PATH and rows[0].status == "received"


def test_v2_is_a_deprecated_alias_logged_once_per_start(rt_app, twilio_fake, caplog):
    app = rt_app(start_workers=False)
    client = app.test_client()
    caplog.set_level(logging.WARNING, logger="app.web.webhook")
    for n in range(3):
        form = twilio_fake.inbound_form(body=f"Oi {n}")
        response = post_signed(client, "/webhook/whatsapp/v2", form, twilio_fake.auth_token)
        assert response.status_code == 200 and b"<Response/>" in response.data
        assert re.fullmatch(r"@\d+", response.headers["Deprecation"])
        assert 'rel="successor-version"' in response.headers["Link"]
    assert post_signed(client, "/webhook/whatsapp/v2", twilio_fake.inbound_form(), "wrong").status_code == 403
    assert sum("deprecated webhook" in r.getMessage() for r in caplog.records) == 1
    with app.extensions["endrigo"].db.session() as db:
        rows = list(db.scalars(select(Message)))
        assert len(rows) == 3 and all(not (r.extra or {}).get("path") for r in rows)
    assert "Deprecation" not in post_signed(client, "/webhook/whatsapp", twilio_fake.inbound_form(),
                                            twilio_fake.auth_token).headers


# ---- operators: /system/realtime-status, /test/realtime-audio, the live card ------------------------

PASSWORD = "painel-secreto-123"


def operator(app):
    from tests.web.dashboard.test_dashboard import logged_in_token, login

    client = app.test_client()
    login(client, PASSWORD)
    return client, logged_in_token(client)


def test_realtime_status_counts_todays_sessions_fallbacks_and_latency(rt_app, twilio_fake, realtime_fake):
    app = rt_app(dashboard_password=PASSWORD)
    anonymous = app.test_client()
    assert anonymous.get("/system/realtime-status").status_code == 401
    assert anonymous.post("/test/realtime-audio").status_code in (400, 401, 403)
    for number, fault in enumerate((None, None, "error_event")):
        realtime_fake.fault = fault
        post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0), From=f"whatsapp:+551199999000{number + 2}")
        settle(app, count=number + 1)

    client, _token = operator(app)
    status = client.get("/system/realtime-status").get_json()
    assert status["configured"] is True and status["model"] == "gpt-realtime-2" and status["voice"] == "marin"
    assert status["sessions_today"] == 3 and status["successes"] == 2 and status["fallbacks"] == 1
    assert status["fallbacks_by_reason"] == {"error_event": 1} and status["abandoned"] == 0
    with app.extensions["endrigo"].db.session() as db:
        latencies = sorted(r.latency_ms for r in db.scalars(select(RealtimeSession))
                           if r.outcome == "answered")
    assert status["latency_ms"] == {"p50": latencies[0], "p95": latencies[1]} and latencies[0] > 0
    assert status["last_error"]["reason"] == "error_event" and "server had an error" in status["last_error"]["message"]
    assert openai_key_absent(app, status)


def openai_key_absent(app, payload) -> bool:
    return app.extensions["endrigo"].settings.openai_api_key not in str(payload)


def test_the_realtime_test_runs_a_generated_phrase_through_a_real_session(rt_app, realtime_fake, twilio_fake):
    app = rt_app(dashboard_password=PASSWORD, start_workers=False)
    client, token = operator(app)
    response = client.post("/test/realtime-audio", headers={"X-CSRFToken": token})
    body = response.get_json()
    assert response.status_code == 200 and body["ok"] is True, body
    assert body["output_seconds"] == pytest.approx(realtime_fake.answer_seconds, abs=0.001)
    assert body["transcript"] == realtime_fake.output_text
    assert realtime_fake.committed_seconds and 1.0 < realtime_fake.committed_seconds[-1] <= 2.0
    assert twilio_fake.sent == []  # a diagnostic: nobody is messaged
    realtime_fake.fault = "handshake_500"
    failed = client.post("/test/realtime-audio", headers={"X-CSRFToken": token})
    assert failed.status_code == 502 and failed.get_json()["error"] == "connect"


def test_the_transcript_shows_the_realtime_session_time(rt_app, twilio_fake, realtime_fake):
    app = rt_app(dashboard_password=PASSWORD)
    post_note(app, twilio_fake, audio_samples.speech_like_ogg(2.0))
    settle(app)
    client, _ = operator(app)
    with app.extensions["endrigo"].db.session() as db:
        user_id = db.scalar(select(Message.user_id))
    page = client.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert 'data-stage="realtime"' in page and "sessão em tempo real" in page
    assert realtime_fake.input_transcript in page  # what the user said, from the session


def test_the_status_page_card_is_live_for_operators_only(rt_app):
    app = rt_app(dashboard_password=PASSWORD, start_workers=False)
    public = app.test_client().get("/").get_data(as_text=True)
    assert 'data-component="realtime" data-state="configured"' in public
    assert "realtime.js" not in public and 'id="realtime-live"' not in public
    client, _ = operator(app)
    page = client.get("/").get_data(as_text=True)
    assert 'id="realtime-live" data-url="/system/realtime-status"' in page
    assert '<script src="/static/js/realtime.js">' in page and "/webhook/whatsapp/realtime" in page
    script = client.get("/static/js/realtime.js")
    assert script.status_code == 200 and b"setInterval(poll" in script.data
    script.close()


# ---- settings ------------------------------------------------------------------------------------

def test_realtime_settings_defaults_and_bad_values():
    from app.config import ConfigError, Settings
    from app.ops.model_watch import known_shutdown

    defaults = Settings.from_env(env={})
    assert defaults.realtime_timeout_seconds == 12.0 and defaults.realtime_voice == "openai"
    assert defaults.openai_realtime_voice == "marin" and defaults.openai_realtime_model == "gpt-realtime-2"
    assert known_shutdown(defaults.openai_realtime_model) is None  # not on OpenAI's shutdown list
    custom = Settings.from_env(env={"REALTIME_VOICE": "ElevenLabs", "REALTIME_TIMEOUT_SECONDS": "8",
                                    "OPENAI_REALTIME_VOICE": "cedar", "OPENAI_REALTIME_URL": "ws://127.0.0.1:9/v1"})
    assert (custom.realtime_voice, custom.realtime_timeout_seconds, custom.openai_realtime_voice) == \
        ("elevenlabs", 8.0, "cedar")
    for env, name in (({"REALTIME_VOICE": "google"}, "REALTIME_VOICE"),
                      ({"REALTIME_TIMEOUT_SECONDS": "0"}, "REALTIME_TIMEOUT_SECONDS"),
                      ({"REALTIME_TIMEOUT_SECONDS": "soon"}, "REALTIME_TIMEOUT_SECONDS"),
                      ({"OPENAI_REALTIME_URL": "https://api.openai.com/v1"}, "OPENAI_REALTIME_URL")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(env=env)


def test_the_gateway_is_built_once_per_process_from_the_settings(rt_app, realtime_fake):
    services = rt_app(start_workers=False, realtime_timeout_seconds=7.0).extensions["endrigo"]
    gateway = services.realtime
    assert gateway is services.realtime  # one per Services (process)
    assert gateway.model == "gpt-realtime-2" and gateway.timeout == 7.0
    assert gateway._websocket_base_url == realtime_fake.ws_base_url
