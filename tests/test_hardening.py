"""Hardening: what a hostile tester found, each reproduced, on SQLite and PostgreSQL.

Signed webhooks with NUL bytes, oversize fields, a huge NumMedia; status callbacks with
``?row=²``, a long ErrorCode, NUL in MessageSid; ``/conversations?q=%00``; the provider
health race; phone numbers of any country masked; forwarded headers only from configured
proxies; repeated form keys.
"""
from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import select

from app.models import Message, ProviderStatus, User
from app.redaction import mask_phone, redact
from tests.conftest import post_signed, sign
from tests.web.dashboard.test_dashboard import PASSWORD, login

PATH = "/webhook/whatsapp"
STATUS = "/webhook/whatsapp/status"
US = "+14155550123"


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False, dashboard_password=PASSWORD)


def stored(app, sid):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(Message).where(Message.provider_sid == sid))


@pytest.mark.parametrize("field", ["Body", "ProfileName", "WaId", "MediaContentType0", "MediaUrl0", "MessageType",
                                   "Latitude", "ButtonText", "NumMedia", "MessageSid", "From"])
def test_a_nul_byte_in_any_field_never_500s(app, twilio_fake, field):
    form = twilio_fake.inbound_form(body="Oi")
    form.setdefault(field, "x")
    form[field] = form[field][:3] + "\x00" + form[field][3:]
    response = post_signed(app.test_client(), PATH, form, twilio_fake.auth_token)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        row = stored(app, form["MessageSid"].replace("\x00", ""))
        assert row is not None and "\x00" not in (row.body or "") + (row.media_type or "")


def test_oversize_fields_are_truncated_and_the_message_stored(app, twilio_fake):
    form = twilio_fake.inbound_form(body="B" * 50_000, profile_name="P" * 500, WaId="1" * 100,
                                    NumMedia=str(10**20), MediaUrl0="https://api.twilio.com/" + "u" * 5000,
                                    MediaContentType0="audio/" + "İ" * 300)
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    row = stored(app, form["MessageSid"])
    assert row.num_media == 10 and len(row.media_type) <= 128 and len(row.body) <= 4096
    with app.extensions["endrigo"].db.session() as session:
        user = session.get(User, row.user_id)
        assert len(user.profile_name) == 128 and len(user.wa_id) == 32


def test_num_media_that_is_not_a_number_is_a_400(app, twilio_fake):
    for value in ("-1", "1e3", "²", "ten"):
        form = twilio_fake.inbound_form(NumMedia=value)
        assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 400


def test_repeated_form_keys_take_the_first_value(app, twilio_fake):
    form = twilio_fake.inbound_form(body="primeiro")
    url = "https://bot.example.com" + PATH
    pairs = list(form.items()) + [("Body", "segundo")]
    # Twilio's validator signs each value of a repeated key; the first one is what we keep.
    from werkzeug.datastructures import MultiDict

    signature = app.extensions["endrigo"].twilio._validator.compute_signature(url, MultiDict(pairs))
    response = app.test_client().post(PATH, data=MultiDict(pairs), headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    assert stored(app, form["MessageSid"]).body == "primeiro"


@pytest.mark.parametrize("query, form_changes", [
    ("?row=%C2%B2", {}), ("?row=%C2%B9%C2%B2", {}), ("?row=99999999999999999999", {}), ("?row=-1", {}), ("?row=", {}),
    ("", {"ErrorCode": "6" * 40, "MessageStatus": "failed"}),
    ("", {"MessageSid": "SM\x00" + "a" * 32}),
    ("", {"MessageStatus": "x" * 40}), ("", {"ErrorMessage": "\x00" * 900, "MessageStatus": "failed"}),
    ("", {"MessageSid": "S" * 500}),
])
def test_status_callbacks_never_500(app, twilio_fake, query, form_changes):
    form = {"MessageSid": "SM" + "b" * 32, "MessageStatus": "delivered", "AccountSid": twilio_fake.account_sid}
    form.update(form_changes)
    response = post_signed(app.test_client(), STATUS + query, form, twilio_fake.auth_token)
    assert response.status_code in (200, 400)


def test_conversation_search_with_nul_is_not_a_500(app):
    client = app.test_client()
    login(client)
    assert client.get("/conversations?q=%00").status_code == 200
    assert client.get("/conversations?q=ana%00%01").status_code == 200


def test_two_first_writes_of_provider_health_do_not_race(make_app):
    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    from app.ops.provider_health import ProviderHealth

    healths = [ProviderHealth(services.db) for _ in range(8)]
    barrier = threading.Barrier(len(healths))
    errors: list = []

    def write(health, i):
        barrier.wait()
        try:
            health.error("openai", f"failure {i}")
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(h, i)) for i, h in enumerate(healths)]
    with _captured("app.ops.provider_health") as records:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and not [r for r in records if r.levelno >= logging.WARNING]
    with services.db.session() as session:
        assert session.get(ProviderStatus, "openai").last_error.startswith("failure")


class _captured:
    def __init__(self, name):
        self.logger, self.records = logging.getLogger(name), []

    def __enter__(self):
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        self.logger.addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


# ---- phone numbers of any country ------------------------------------------------------------

@pytest.mark.parametrize("number, masked", [
    ("+5511987654321", "+55 11 9****-4321"), (US, "+1 ******0123"), ("+447911123456", "+44 ******3456"),
    ("+351912345678", "+351 *****5678"), ("+12025550199", "+1 ******0199"), ("sim:ab12", "sim:ab12"),
])
def test_numbers_of_any_country_are_masked(number, masked):
    assert mask_phone(number) == masked
    line = redact(f"sent to whatsapp:{number} and {number.lstrip('+')} (WaId)")
    assert number.lstrip("+") not in line or number.startswith("sim:")


def test_a_us_number_is_masked_on_the_public_status_page_advanced_status_and_transcript(app, twilio_fake):
    services = app.extensions["endrigo"]
    services.provider_health.error("twilio", f"Twilio 400 error 21211: Invalid 'To' Phone Number: whatsapp:{US}")
    form = twilio_fake.inbound_form(from_="whatsapp:" + US, body=f"meu número é {US}")
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    public = app.test_client().get("/").get_data(as_text=True)
    assert US not in public and US[1:] not in public and "+1 ******0123" in public
    client = app.test_client()
    login(client)
    advanced = client.get("/system/advanced-status").get_data(as_text=True)
    assert US[1:] not in advanced
    user_id = stored(app, form["MessageSid"]).user_id
    transcript = client.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert 'id="user-phone">+1 ******0123<' in transcript


# ---- forwarded headers ----------------------------------------------------------------------

def _login_attempts(client, n, rotate: bool):
    statuses = []
    for i in range(n):
        page = client.get("/login").get_data(as_text=True)
        import re

        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        headers = {"X-Forwarded-For": f"203.0.113.{i}"} if rotate else {}
        statuses.append(client.post("/login", data={"password": "wrong", "csrf_token": token},
                                    headers=headers).status_code)
    return statuses


def test_x_forwarded_for_rotation_cannot_dodge_login_limits_without_a_proxy(app):
    statuses = _login_attempts(app.test_client(), 25, rotate=True)  # above any per-address limit
    assert 429 in statuses  # the forged addresses were ignored: one client, throttled


def test_with_a_configured_proxy_forwarded_proto_host_and_prefix_are_used(make_app, twilio_fake):
    app = make_app(start_workers=False, public_base_url=None, trusted_proxies=("127.0.0.1",))
    form = twilio_fake.inbound_form()
    public = "https://endrigo.example.org/bot" + PATH
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "endrigo.example.org",
               "X-Forwarded-Prefix": "/bot", "X-Twilio-Signature": sign(public, form, twilio_fake.auth_token)}
    assert app.test_client().post(PATH, data=form, headers=headers).status_code == 200
    # From a peer that is not the proxy, the same headers are not believed.
    untrusted = app.test_client().post(PATH, data=dict(form), headers=headers,
                                       environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert untrusted.status_code == 403


def test_without_a_proxy_forwarded_headers_do_not_change_the_signed_url(make_app, twilio_fake):
    app = make_app(start_workers=False, public_base_url=None)
    form = twilio_fake.inbound_form()
    forged = "https://attacker.example" + PATH
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "attacker.example",
               "X-Twilio-Signature": sign(forged, form, twilio_fake.auth_token)}
    assert app.test_client().post(PATH, data=form, headers=headers).status_code == 403
