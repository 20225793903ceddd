"""Fuzz with hypothesis: correctly signed webhook forms and status callbacks, and /media.

Random values in known fields (any unicode, NUL and other controls, huge strings, numbers
far beyond 2**63), missing keys, unknown keys and repeated keys: the app never answers 5xx,
and every message it stored ends in a final state (none left ``received``/``processing``).

Size: FUZZ_EXAMPLES examples per test (default 200, kept fast for CI; e.g. FUZZ_EXAMPLES=3000
for a long run). Media URLs only ever point at a closed local port, so nothing leaves the machine.
"""
from __future__ import annotations

import os
import secrets
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from app.models import Message
from tests.conftest import wait_for

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
BASE = "https://bot.example.com"
INBOUND_FIELDS = ["MessageSid", "SmsMessageSid", "From", "To", "Body", "ProfileName", "WaId", "NumMedia",
                  "MediaUrl0", "MediaContentType0", "MediaUrl1", "MessageType", "Latitude", "Longitude",
                  "Address", "Label", "ButtonText", "ButtonPayload", "OriginalRepliedMessageSid", "Forwarded",
                  "ReferralBody", "NumSegments", "AccountSid", "SmsStatus"]
STATUS_FIELDS = ["MessageSid", "SmsSid", "MessageStatus", "SmsStatus", "ErrorCode", "ErrorMessage", "From", "To"]

# Any character a form can carry (lone surrogates cannot be encoded as UTF-8 by any client).
any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)
huge = st.builds(lambda c, n: c * n, st.sampled_from(["x", "9", "\x00", "é", "🙂", "İ", " "]),
                 st.integers(100, 20_000))
numbers = st.integers(-(10**30), 10**30).map(str)
digits = st.text(alphabet=string.digits + "+²¹٣", min_size=1, max_size=40)
values = st.one_of(any_text, huge, numbers, digits, st.just(""), st.sampled_from(
    ["audio/ogg", "image/jpeg", "text", "audio", "location", "whatsapp:+5511999990001", "+14155550123"]))


def _local_media_url(value: str) -> str:
    return "http://127.0.0.1:9/" + value[:200]  # port 9 (discard): closed, local


@st.composite
def inbound_forms(draw, base: dict):
    form = MultiDict(base)
    for name in draw(st.lists(st.sampled_from(INBOUND_FIELDS), max_size=8, unique=True)):
        action = draw(st.sampled_from(["set", "set", "delete", "repeat"]))
        value = draw(values)
        if name.startswith("MediaUrl"):
            value = _local_media_url(value)
        if action == "delete":
            form.poplist(name)
        elif action == "repeat":
            form.add(name, value)
        else:
            form.setlist(name, [value])
    for _ in range(draw(st.integers(0, 3))):  # fields Twilio may add one day
        form.add(draw(st.text(alphabet=string.ascii_letters, min_size=1, max_size=20)), draw(values))
    return form


def _signed_post(client, token: str, path: str, form: MultiDict):
    signature = RequestValidator(token).compute_signature(BASE + path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def _stuck(app) -> int:
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "in", Message.status.in_(("received", "processing"))))


def test_fuzzed_signed_webhooks_never_5xx_and_nothing_is_left_stuck(make_app, twilio_fake):
    app = make_app(media_allowed_hosts=("127.0.0.1",), retry_backoff_seconds=(0.05,), workers=4)
    client = app.test_client()
    answers = {"2xx": 0, "400": 0}

    @FUZZ
    @given(data=st.data())
    def run(data):
        base = twilio_fake.inbound_form(body="Oi", message_sid="SM" + secrets.token_hex(16),
                                        from_=f"whatsapp:+55119{secrets.randbelow(10**8):08d}")
        form = data.draw(inbound_forms(base))
        response = _signed_post(client, twilio_fake.auth_token, "/webhook/whatsapp", form)
        assert response.status_code < 500, response.get_data(as_text=True)
        # 413: the whole request is over MAX_REQUEST_BYTES (a refusal, as wanted; Twilio's are far smaller).
        assert response.status_code in (200, 400, 413)
        answers["2xx" if response.status_code == 200 else "400"] += 1

    run()
    assert answers["2xx"] > 0 and answers["400"] > 0  # the fuzz reached both outcomes
    wait_for(lambda: _stuck(app) == 0, timeout=120, interval=0.2)


def test_fuzzed_signed_status_callbacks_never_5xx(make_app, twilio_fake):
    app = make_app(start_workers=False)
    client = app.test_client()

    @FUZZ
    @given(fields=st.dictionaries(st.sampled_from(STATUS_FIELDS), values, max_size=6),
           status=st.sampled_from(["delivered", "failed", "undelivered", "read", "sent", "queued", "weird"]),
           row=st.one_of(st.none(), numbers, digits, any_text.map(lambda t: t[:20])),
           repeated=st.booleans())
    def run(fields, status, row, repeated):
        form = MultiDict({"MessageSid": "SM" + secrets.token_hex(16), "MessageStatus": status,
                          "AccountSid": twilio_fake.account_sid})
        for name, value in fields.items():
            form.add(name, value) if repeated else form.setlist(name, [value])
        path = "/webhook/whatsapp/status"
        if row is not None:
            from urllib.parse import quote

            path += "?row=" + quote(row, safe="")
        response = _signed_post(client, twilio_fake.auth_token, path, form)
        assert response.status_code in (200, 400, 413), response.get_data(as_text=True)

    run()


def test_fuzzed_media_tokens_are_refused_never_5xx(make_app):
    app = make_app(start_workers=False)
    client = app.test_client()
    storage = app.extensions["endrigo"].storage
    good = storage.make_token(storage.save(b"OggS" + b"z" * 32, "audio/ogg", ".ogg").key)

    @FUZZ
    @given(token=st.one_of(any_text, huge, st.builds(lambda a, b: good[:a] + b + good[a:],
                                                     st.integers(0, len(good)), any_text.map(lambda t: t[:5]))))
    def run(token):
        from urllib.parse import quote

        response = client.get("/media/" + quote(token, safe=""))
        assert response.status_code in (200, 403, 404, 410, 308), response.status_code
        if response.status_code == 200:
            assert token == good or storage.verify_token(token)  # only a valid token serves a file

    run()
    assert client.get("/media/" + good).status_code == 200
