"""The fault suite: every provider call failing in every way, and what the user gets.

For each provider call (Twilio send, Twilio media, OpenAI answer, transcription, embeddings,
ElevenLabs, GCS, the database) a fault is injected — 500, 429, a timeout, connection refused,
a malformed body — into one real message's path through the app and the emulators. Each case
states the outcome: the message's final status and reason, and what the user received —
exactly one answer, or exactly one apology (a holding message may precede either) — and that
nothing went out twice (counted at the Twilio emulator).

Faults are injected on the wire wherever the emulators allow it (HTTP status, delay past the
client's timeout, a closed port, a body that is not JSON); "connection refused" for one
OpenAI endpoint swaps that endpoint's method for the same gateway pointed at a closed port;
GCS faults are the exceptions google-cloud-storage raises, thrown from the upload (its own
retries of 5xx take minutes); database faults are driver errors raised from SQLAlchemy's
cursor hook. Retries use a 0.05 s backoff to keep the table fast.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import event, select

import app.channels.twilio.media as media_module
from app.clients.openai_client import OpenAIGateway
from app.models import Message
from app.pipeline import notices
from tests.conftest import post_signed, wait_for
from tests.fakes import audio_samples

PROJECT = Path(__file__).resolve().parent.parent
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
USER = "whatsapp:+5511999990001"


@pytest.fixture(scope="module")
def vector_documents(tmp_path_factory, _openai_server):
    """The shipped documents with a vectors file made by create_embeddings.py on the emulator,
    so that retrieval embeds each query (the embeddings cases)."""
    folder = tmp_path_factory.mktemp("kb") / "documents"
    shutil.copytree(PROJECT / "documents", folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_API_KEY=_openai_server.api_key, OPENAI_BASE_URL=_openai_server.v1_url)
    subprocess.run([sys.executable, str(PROJECT / "create_embeddings.py"), "--documents", str(folder)],
                   cwd=folder.parent, env=env, check=True, capture_output=True, timeout=120)
    return folder


# (provider, fault) -> expected final inbound status, what the user ends with, a fragment of the reason.
CASES = {
    ("twilio_send", "500"): ("answered", "answer", None),
    ("twilio_send", "429"): ("answered", "answer", None),
    ("twilio_send", "timeout"): ("answered", "answer", None),
    ("twilio_send", "refused"): ("failed", "nothing", "Twilio unreachable"),
    ("twilio_send", "malformed"): ("answered", "answer", None),
    ("twilio_media", "500"): ("answered", "notice", None),
    ("twilio_media", "429"): ("answered", "notice", None),
    ("twilio_media", "timeout"): ("answered", "notice", None),
    ("twilio_media", "refused"): ("answered", "notice", None),
    ("twilio_media", "malformed"): ("answered", "unreadable", None),
    ("openai_answer", "500"): ("answered", "answer", None),
    ("openai_answer", "429"): ("answered", "answer", None),
    ("openai_answer", "timeout"): ("answered", "answer", None),
    ("openai_answer", "refused"): ("failed", "apology", "OpenAI unreachable"),
    ("openai_answer", "malformed"): ("answered", "answer", None),
    ("transcription", "500"): ("answered", "answer", None),
    ("transcription", "429"): ("answered", "answer", None),
    ("transcription", "timeout"): ("answered", "answer", None),
    ("transcription", "refused"): ("failed", "apology", "OpenAI unreachable"),
    ("transcription", "malformed"): ("answered", "answer", None),
    ("embeddings", "500"): ("answered", "answer", None),
    ("embeddings", "429"): ("answered", "answer", None),
    ("embeddings", "timeout"): ("answered", "answer", None),
    ("embeddings", "refused"): ("answered", "answer", None),
    ("embeddings", "malformed"): ("answered", "answer", None),
    ("elevenlabs", "500"): ("answered", "text answer", None),
    ("elevenlabs", "429"): ("answered", "text answer", None),
    ("elevenlabs", "timeout"): ("answered", "text answer", None),
    ("elevenlabs", "refused"): ("answered", "text answer", None),
    ("elevenlabs", "malformed"): ("answered", "answer", None),
    ("gcs", "500"): ("answered", "text answer", None),
    ("gcs", "429"): ("answered", "text answer", None),
    ("gcs", "timeout"): ("answered", "text answer", None),
    ("gcs", "refused"): ("answered", "text answer", None),
    ("gcs", "malformed"): ("answered", "text answer", None),
    ("database", "intake"): ("answered", "answer", None),
    ("database", "take_turn"): ("answered", "answer", None),
    ("database", "gate"): ("answered", "answer", None),
    ("database", "finish"): ("answered", "answer", None),
    ("database", "record_sent"): ("answered", "answer", None),
}
VOICE = {"twilio_media", "transcription", "elevenlabs", "gcs"}
ONLINE = {"twilio_media", "openai_answer", "transcription", "embeddings", "elevenlabs", "gcs"}


class DriverFault:
    """Raise the driver's OperationalError from the next ``times`` statements that contain ``marker``."""

    def __init__(self, engine, marker: str, times: int = 1):
        self.marker, self.times = marker, times
        self.dbapi_error = engine.dialect.loaded_dbapi.OperationalError
        event.listen(engine, "before_cursor_execute", self)

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if self.times > 0 and self.marker in statement:
            self.times -= 1
            raise self.dbapi_error("injected: server closed the connection unexpectedly")


def _build(make_app, openai_fake, elevenlabs_fake, provider, fault, vector_documents):
    values = dict(retry_backoff_seconds=(0.05, 0.05), openai_max_retries=0, openai_timeout_seconds=1.0,
                  media_allowed_hosts=("127.0.0.1", "localhost"), turn_budget_seconds=8.0)
    if provider in ONLINE:
        values.update(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url)
    if provider in ("elevenlabs", "gcs"):
        values.update(elevenlabs_api_key=elevenlabs_fake.api_key, elevenlabs_base_url=elevenlabs_fake.base_url)
    if provider == "embeddings":
        values.update(documents_dir=str(vector_documents))
    if (provider, fault) == ("elevenlabs", "timeout"):
        values.update(turn_budget_seconds=4.5)  # ElevenLabs then gets ~2.5 s, and answers after 4 s
    return make_app(**values)


def _inject(app, provider, fault, twilio_fake, openai_fake, elevenlabs_fake, monkeypatch):
    services = app.extensions["endrigo"]
    refused_openai = OpenAIGateway(services.settings.replace(openai_base_url=CLOSED + "/v1"))
    if provider == "twilio_send":
        if fault in ("500", "429"):
            twilio_fake.fail_sends(int(fault), times=1)
        elif fault == "timeout":
            twilio_fake.drop_sends(1)  # accepted, then no answer: the client cannot know
        elif fault == "refused":
            monkeypatch.setattr(services.twilio._client.api, "base_url", CLOSED)
        else:
            twilio_fake.fail_next(201, raw_body=b"<html>proxy error</html>", path_contains="/Messages.json")
    elif provider == "twilio_media":
        path = "/Media/"
        if fault in ("500", "429"):
            twilio_fake.fail_next(int(fault), path_contains=path, times=5)
        elif fault == "timeout":
            monkeypatch.setattr(media_module, "READ_TIMEOUT", 0.3)
            twilio_fake.fail_next(200, raw_body=b"OggS", path_contains=path, delay=1.0, times=5)
        elif fault == "malformed":
            twilio_fake.fail_next(200, raw_body=b"<html>not audio</html>", path_contains=path, times=5,
                                  headers={"Content-Type": "audio/ogg"})
        # "refused": the form's MediaUrl0 points at the closed port (see _send)
    elif provider in ("openai_answer", "transcription", "embeddings"):
        endpoint = {"openai_answer": "/v1/responses", "transcription": "/v1/audio/transcriptions",
                    "embeddings": "/v1/embeddings"}[provider]
        method = {"openai_answer": "respond", "transcription": "transcribe", "embeddings": "embed"}[provider]
        if fault in ("500", "429"):
            openai_fake.fail_next(int(fault), path_contains=endpoint, times=1)
        elif fault == "timeout":
            openai_fake.fail_next(500, path_contains=endpoint, delay=1.5, times=1)
        elif fault == "refused":
            monkeypatch.setattr(services.openai, method, getattr(refused_openai, method))
        else:
            openai_fake.fail_next(200, raw_body=b'{"id": "resp_1", "object": "resp', path_contains=endpoint, times=1)
    elif provider == "elevenlabs":
        if fault in ("500", "429"):
            elevenlabs_fake.fail_next(int(fault), times=1)
        elif fault == "timeout":
            elevenlabs_fake.fail_next(500, delay=4.0, times=1)
        elif fault == "refused":
            from app.clients.elevenlabs_client import ElevenLabsGateway

            services.__dict__["tts"] = ElevenLabsGateway(services.settings.replace(elevenlabs_base_url=CLOSED))
        else:
            elevenlabs_fake.fail_next(200, raw_body=b"this is not audio", headers={"Content-Type": "audio/ogg"})
    elif provider == "gcs":
        import requests
        from google.api_core import exceptions as gexc

        error = {"500": gexc.InternalServerError("injected"), "429": gexc.TooManyRequests("injected"),
                 "timeout": requests.Timeout("injected"), "refused": requests.ConnectionError("injected"),
                 "malformed": ValueError("injected: not JSON")}[fault]

        class FailingStorage:
            calls = 0

            def save(self, *args, **kwargs):
                FailingStorage.calls += 1
                raise error

        services.__dict__["storage"] = FailingStorage()
        return FailingStorage
    elif provider == "database":
        engine = services.db.engine
        if fault == "intake":
            original = services.inbound_writer.store
            calls = {"n": 0}

            def store_fails_once(inbound, channel):
                calls["n"] += 1
                if calls["n"] == 1:
                    raise engine.dialect.loaded_dbapi.OperationalError("injected: database unavailable")
                return original(inbound, channel)

            monkeypatch.setattr(services.inbound_writer, "store", store_fails_once)
        else:
            marker = {"take_turn": "INSERT INTO turns", "gate": "FROM users", "finish": "UPDATE turns SET status",
                      "record_sent": "provider_sid="}[fault]
            return DriverFault(engine, marker)
    return None


def _send(app, twilio_fake, provider, fault):
    client = app.test_client()
    if provider in VOICE:
        note = audio_samples.speech_like_ogg(2.0, "24k")
        url = CLOSED + "/Media/ME1" if (provider, fault) == ("twilio_media", "refused") else note
        form = twilio_fake.inbound_form(body="", media=(url, "audio/ogg"), MessageType="audio")
    else:
        form = twilio_fake.inbound_form(body="Quais serviços vocês oferecem?")
    response = post_signed(client, "/webhook/whatsapp", form, twilio_fake.auth_token)
    if (provider, fault) == ("database", "intake"):
        assert response.status_code == 503  # not stored: Twilio is told to deliver it again
        response = post_signed(client, "/webhook/whatsapp", form, twilio_fake.auth_token)
    assert response.status_code == 200
    return form["MessageSid"]


def _final(app, sid):
    with app.extensions["endrigo"].db.session() as session:
        row = session.scalar(select(Message).where(Message.provider_sid == sid))
        return row if row is not None and row.status in ("answered", "failed", "ignored", "limited") else None


@pytest.mark.parametrize("provider, fault", list(CASES), ids=[f"{p}-{f}" for p, f in CASES])
def test_fault(provider, fault, make_app, twilio_fake, openai_fake, elevenlabs_fake, vector_documents,
               tmp_path, monkeypatch, request):
    if provider == "twilio_send" and fault == "malformed":
        request.applymarker(pytest.mark.nonconformant_ok)
    expected_status, ending, reason = CASES[provider, fault]
    openai_fake.transcript_text = "Quais serviços vocês oferecem?"
    app = _build(make_app, openai_fake, elevenlabs_fake, provider, fault, vector_documents)
    injected = _inject(app, provider, fault, twilio_fake, openai_fake, elevenlabs_fake, monkeypatch)
    sid = _send(app, twilio_fake, provider, fault)
    row = wait_for(lambda: _final(app, sid), timeout=30)
    app.extensions["endrigo"].inbox.shutdown(wait=True)  # nothing more may go out after this

    # The fault really happened on this message's path.
    if isinstance(injected, DriverFault):
        assert injected.times == 0
    elif provider == "gcs":
        assert injected.calls >= 1
    elif provider == "twilio_send" and fault in ("500", "429", "timeout"):
        assert not twilio_fake._send_faults and twilio_fake._drops == 0
    elif fault != "refused" and provider != "database":
        fake = {"twilio_media": twilio_fake, "elevenlabs": elevenlabs_fake}.get(provider, openai_fake)
        if provider == "twilio_send":
            fake = twilio_fake
        assert all(f.times < 5 for f in fake._faults) if provider in ("twilio_media",) else not fake._faults
    if provider == "embeddings" and fault != "refused":
        assert openai_fake.requests_to("/v1/embeddings"), "retrieval embedded the query"

    assert row.status == expected_status, row.error
    if reason:
        assert reason in (row.error or ""), row.error
    sent = [m for m in twilio_fake.sent if m["to"] == USER]
    bodies = Counter(m["body"] for m in sent if m["body"])
    media = Counter(str(m["media_url"]) for m in sent if m["media_url"])
    assert all(n == 1 for n in bodies.values()) and all(n == 1 for n in media.values()), (bodies, media)
    holding = bodies.pop(notices.HOLDING, 0)
    apology = bodies.pop(notices.APOLOGY, 0)
    assert holding <= 1
    replies = sum(bodies.values()) + sum(media.values())
    if ending == "nothing":
        assert not sent
    elif ending == "apology":
        assert apology == 1 and replies == 0
    else:
        assert apology == 0 and replies >= 1
        text = " ".join(bodies)
        if ending == "notice":
            assert notices.MEDIA_UNAVAILABLE in text
        elif ending == "unreadable":
            assert notices.AUDIO_UNREADABLE in text
        elif ending == "text answer":
            assert not media, "the voice reply failed: the answer goes as text"
