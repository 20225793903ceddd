"""The inbound webhook: Twilio's signature, parsing, durable idempotent insert, bad input."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from app.models import Message, User
from tests.conftest import post_signed, sign, wait_for

PATH = "/webhook/whatsapp"


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False)


@pytest.fixture
def client(app):
    return app.test_client()


def count(app, model, *where):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_signed_message_is_stored_and_answered_with_empty_twiml(app, client, twilio_fake):
    form = twilio_fake.inbound_form(body="Olá, quais serviços vocês oferecem?")
    response = post_signed(client, PATH, form, twilio_fake.auth_token)
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.data.decode().endswith("<Response/>")
    with app.extensions["endrigo"].db.session() as session:
        message = session.scalar(select(Message).where(Message.provider_sid == form["MessageSid"]))
        user = session.get(User, message.user_id)
    assert message.status == "received" and message.direction == "in" and message.kind == "text"
    assert message.body == "Olá, quais serviços vocês oferecem?"
    assert user.phone == "+5511999990001" and user.profile_name == "Ana" and user.message_count == 1


def test_repeated_message_sid_is_stored_once(app, client, twilio_fake):
    form = twilio_fake.inbound_form(body="Oi")
    for _ in range(3):
        assert post_signed(client, PATH, form, twilio_fake.auth_token).status_code == 200
    assert count(app, Message, Message.provider_sid == form["MessageSid"]) == 1
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(User.message_count)) == 1


def test_missing_signature_is_refused(app, client, twilio_fake):
    response = client.post(PATH, data=twilio_fake.inbound_form())
    assert response.status_code == 403
    assert count(app, Message) == 0


def test_wrong_signature_and_wrong_token_are_refused(app, client, twilio_fake):
    form = twilio_fake.inbound_form()
    bad = client.post(PATH, data=form, headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
    other_token = post_signed(client, PATH, form, "some-other-auth-token")
    tampered = dict(form, Body="something else")
    tampered_response = client.post(
        PATH, data=tampered, headers={"X-Twilio-Signature": sign("https://bot.example.com" + PATH, form,
                                                                 twilio_fake.auth_token)})
    assert (bad.status_code, other_token.status_code, tampered_response.status_code) == (403, 403, 403)
    assert count(app, Message) == 0


def test_http_signature_does_not_pass_for_https_public_url(client, twilio_fake):
    form = twilio_fake.inbound_form()
    response = post_signed(client, PATH, form, twilio_fake.auth_token, base="http://bot.example.com")
    assert response.status_code == 403


def test_behind_a_proxy_the_public_https_url_is_rebuilt(make_app, twilio_fake):
    app = make_app(start_workers=False, public_base_url=None, trusted_proxy_count=1)
    client = app.test_client()
    form = twilio_fake.inbound_form()
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "endrigo.example.org"}
    ok = post_signed(client, PATH, form, twilio_fake.auth_token, base="https://endrigo.example.org",
                     headers=headers)
    assert ok.status_code == 200
    # The same signature presented without the proxy headers (plain http to localhost) fails.
    plain = client.post(PATH, data=dict(form, MessageSid="SM" + "1" * 32),
                        headers={"X-Twilio-Signature": sign("https://endrigo.example.org" + PATH, form,
                                                            twilio_fake.auth_token)})
    assert plain.status_code == 403


def test_query_string_is_signed_as_sent(client, twilio_fake):
    form = twilio_fake.inbound_form()
    path = PATH + "?z=1&a=2"
    url = "https://bot.example.com" + path
    response = client.post(path, data=form, headers={"X-Twilio-Signature": sign(url, form, twilio_fake.auth_token)})
    assert response.status_code == 200
    reordered = client.post(PATH + "?a=2&z=1", data=dict(form, MessageSid="SM" + "2" * 32),
                            headers={"X-Twilio-Signature": sign(url, form, twilio_fake.auth_token)})
    assert reordered.status_code == 403


def test_sha256_signature_with_an_algorithm_but_no_key_uses_the_auth_token(client, twilio_fake):
    form = twilio_fake.inbound_form()
    url = "https://bot.example.com" + PATH
    signature = RequestValidator(twilio_fake.auth_token).compute_signature(url, form, algorithm="HMAC_SHA256")
    response = client.post(PATH, data=form, headers={
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_SHA256",
    })
    assert response.status_code == 200
    sha1 = client.post(PATH, data=dict(form, MessageSid="SM" + "3" * 32), headers={
        "X-Twilio-Signature": signature,  # a SHA-256 signature does not pass as SHA-1
    })
    assert sha1.status_code == 403


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"MessageSid": None}, b"MessageSid is missing"),
        ({"MessageSid": "SM123"}, b"MessageSid is malformed"),
        ({"From": None}, b"From is missing"),
        ({"From": "whatsapp:not-a-number"}, b"From is not a WhatsApp number"),
        ({"NumMedia": "many"}, b"NumMedia is not a number"),
    ],
)
def test_malformed_forms_get_400_with_a_reason(app, client, twilio_fake, change, reason):
    form = twilio_fake.inbound_form()
    form.pop("SmsMessageSid", None)
    for key, value in change.items():
        if value is None:
            form.pop(key, None)
        else:
            form[key] = value
    response = post_signed(client, PATH, form, twilio_fake.auth_token)
    assert response.status_code == 400
    assert reason in response.data
    assert count(app, Message) == 0


def test_unknown_fields_are_accepted(app, client, twilio_fake):
    form = twilio_fake.inbound_form(body="Oi", BrandNewTwilioField="x", ReferralHeadline="Anúncio")
    assert post_signed(client, PATH, form, twilio_fake.auth_token).status_code == 200
    with app.extensions["endrigo"].db.session() as session:
        message = session.scalar(select(Message))
    assert message.extra["ReferralHeadline"] == "Anúncio"


def test_huge_request_is_refused_with_413(client, twilio_fake):
    form = twilio_fake.inbound_form(body="x" * 400_000)
    assert post_signed(client, PATH, form, twilio_fake.auth_token).status_code == 413


def test_wrong_method_is_405(client):
    assert client.get(PATH).status_code == 405
    assert client.put(PATH).status_code == 405


def test_non_utf8_body_never_causes_5xx(app, client, twilio_fake):
    form = twilio_fake.inbound_form()
    raw = urlencode({k: v for k, v in form.items() if k != "Body"}).encode() + b"&Body=%ff%fe%80ol%e1"
    response = client.post(PATH, data=raw, content_type="application/x-www-form-urlencoded",
                           headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 403
    garbage = client.post(PATH, data=b"\xff\xfe\x00garbage", content_type="application/x-www-form-urlencoded")
    assert garbage.status_code == 403


def test_non_utf8_body_is_stored_when_signature_checks_are_off(make_app, twilio_fake):
    app = make_app(start_workers=False, twilio_validate_signature=False)
    client = app.test_client()
    form = twilio_fake.inbound_form()
    raw = urlencode({k: v for k, v in form.items() if k != "Body"}).encode() + b"&Body=ol%e1%ff"
    response = client.post(PATH, data=raw, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert count(app, Message) == 1


def test_a_10000_character_body_is_answered_in_parts(make_app, twilio_fake):
    app = make_app()
    client = app.test_client()
    body = ("Quero saber sobre tráfego pago e automação de WhatsApp. " * 200)[:10_000]
    form = twilio_fake.inbound_form(body=body)
    assert post_signed(client, PATH, form, twilio_fake.auth_token).status_code == 200
    sent = wait_for(lambda: [m for m in twilio_fake.sent if m["to"] == "whatsapp:+5511999990001"])
    assert all(len(m["body"]) <= 1600 for m in sent)
    wait_for(lambda: count(app, Message, Message.direction == "in", Message.status == "answered") == 1)
