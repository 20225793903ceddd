"""Twilio's webhook signatures at the edges: the public URL behind proxies (prefix, port, scheme,
query as sent, PUBLIC_BASE_URL with and without a path), SharedKey signatures
(TWILIO_WEBHOOK_SHARED_KEYS) and JSON bodies signed through ``bodySHA256``."""
from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from app.channels.twilio.signature import public_app_url, public_request_url
from app.models import Message
from tests.conftest import sign

PATH = "/webhook/whatsapp"


def count(app, model=Message, *where):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def signed_post(client, path, form, token, signed_url, headers=None, **kwargs):
    """POST ``form`` to ``path`` with a signature Twilio made for ``signed_url``."""
    headers = dict(headers or {}, **{"X-Twilio-Signature": sign(signed_url, form, token)})
    return client.post(path, data=form, headers=headers, **kwargs)


def new_form(twilio_fake, n: int) -> dict:
    return twilio_fake.inbound_form(message_sid="SM" + f"{n:032x}")


# ---- the public URL behind proxies ----------------------------------------------------------------

PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "host.example.net", "X-Forwarded-Prefix": "/bot"}


@pytest.fixture
def proxied_app(make_app):
    return make_app(start_workers=False, public_base_url=None, trusted_proxy_count=1)  # one proxy in front


def test_a_prefix_mounted_proxy_gets_the_url_twilio_signed(proxied_app, twilio_fake):
    client = proxied_app.test_client()
    signed = "https://host.example.net/bot/webhook/whatsapp?x=1"
    ok = signed_post(client, PATH + "?x=1", new_form(twilio_fake, 1), twilio_fake.auth_token, signed, PROXY)
    assert ok.status_code == 200
    # The same request without the prefix header is not the URL Twilio signed ...
    no_prefix = {k: v for k, v in PROXY.items() if k != "X-Forwarded-Prefix"}
    assert signed_post(client, PATH + "?x=1", new_form(twilio_fake, 2), twilio_fake.auth_token, signed,
                       no_prefix).status_code == 403
    # ... and a signature made for the URL without the prefix does not pass with it.
    assert signed_post(client, PATH + "?x=1", new_form(twilio_fake, 3), twilio_fake.auth_token,
                       "https://host.example.net/webhook/whatsapp?x=1", PROXY).status_code == 403
    assert count(proxied_app) == 1


def test_the_remembered_public_address_keeps_the_prefix(proxied_app, twilio_fake):
    client = proxied_app.test_client()
    signed = "https://host.example.net/bot/webhook/whatsapp"
    assert signed_post(client, PATH, new_form(twilio_fake, 1), twilio_fake.auth_token, signed, PROXY).status_code == 200
    services = proxied_app.extensions["endrigo"]
    assert services.public_base_url() == "https://host.example.net/bot"
    assert services.status_callback_url(7) == "https://host.example.net/bot/webhook/whatsapp/status?row=7"


@pytest.mark.parametrize("prefix", ["/bot/", "bot"])
def test_a_prefix_with_a_trailing_slash_or_without_a_leading_one_is_normalised(proxied_app, twilio_fake, prefix):
    client = proxied_app.test_client()
    headers = dict(PROXY, **{"X-Forwarded-Prefix": prefix})
    signed = "https://host.example.net/bot/webhook/whatsapp"
    assert signed_post(client, PATH, new_form(twilio_fake, 1), twilio_fake.auth_token, signed, headers).status_code == 200


def test_a_non_default_port_is_part_of_the_signed_url(proxied_app, twilio_fake):
    client = proxied_app.test_client()
    headers = dict(PROXY, **{"X-Forwarded-Port": "8443"})
    signed = "https://host.example.net:8443/bot/webhook/whatsapp"
    assert signed_post(client, PATH, new_form(twilio_fake, 1), twilio_fake.auth_token, signed, headers).status_code == 200
    other_port = "https://host.example.net:9443/bot/webhook/whatsapp"
    assert signed_post(client, PATH, new_form(twilio_fake, 2), twilio_fake.auth_token, other_port,
                       headers).status_code == 403
    # Twilio's RequestValidator also accepts the URL with no port at all ("signature generation
    # on the back end is inconsistent", it says): that tolerance is the SDK's, kept as it is.
    no_port = "https://host.example.net/bot/webhook/whatsapp"
    assert signed_post(client, PATH, new_form(twilio_fake, 3), twilio_fake.auth_token, no_port,
                       headers).status_code == 200


def test_a_port_in_the_host_header_without_a_proxy(proxied_app, twilio_fake):
    client = proxied_app.test_client()
    response = signed_post(client, PATH, new_form(twilio_fake, 1), twilio_fake.auth_token,
                           "http://127.0.0.1:8080/webhook/whatsapp", base_url="http://127.0.0.1:8080")
    assert response.status_code == 200


def test_the_query_string_is_kept_in_the_order_sent_behind_a_prefix(proxied_app, twilio_fake):
    client = proxied_app.test_client()
    query = "?z=1&a=2&z=0&empty=&sp=a%20b"
    signed = "https://host.example.net/bot/webhook/whatsapp" + query
    assert signed_post(client, PATH + query, new_form(twilio_fake, 1), twilio_fake.auth_token, signed,
                       PROXY).status_code == 200
    reordered = "?a=2&z=1&z=0&empty=&sp=a%20b"
    assert signed_post(client, PATH + reordered, new_form(twilio_fake, 2), twilio_fake.auth_token, signed,
                       PROXY).status_code == 403


def test_https_behind_a_proxy_is_not_http(proxied_app, twilio_fake):
    client = proxied_app.test_client()
    http_signed = "http://host.example.net/bot/webhook/whatsapp"
    assert signed_post(client, PATH, new_form(twilio_fake, 1), twilio_fake.auth_token, http_signed,
                       PROXY).status_code == 403
    plain_http = dict(PROXY, **{"X-Forwarded-Proto": "http"})
    assert signed_post(client, PATH, new_form(twilio_fake, 2), twilio_fake.auth_token, http_signed,
                       plain_http).status_code == 200


def test_a_server_mounted_app_whose_raw_uri_carries_script_name(proxied_app, twilio_fake):
    """gunicorn with SCRIPT_NAME=/bot (no proxy stripping): RAW_URI is the full target, /bot included."""
    client = proxied_app.test_client()
    target = "/bot/webhook/whatsapp?x=1"
    response = signed_post(client, PATH + "?x=1", new_form(twilio_fake, 1), twilio_fake.auth_token,
                           "https://host.example.net/bot/webhook/whatsapp?x=1",
                           {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "host.example.net"},
                           base_url="http://localhost/bot", environ_overrides={"RAW_URI": target, "REQUEST_URI": target})
    assert response.status_code == 200


def test_public_base_url_without_a_path_takes_the_prefix_from_the_proxy(make_app, twilio_fake):
    app = make_app(start_workers=False, public_base_url="https://bot.example.com", trusted_proxy_count=1)
    client = app.test_client()
    signed = "https://bot.example.com/bot/webhook/whatsapp?x=1"
    assert signed_post(client, PATH + "?x=1", new_form(twilio_fake, 1), twilio_fake.auth_token, signed,
                       {"X-Forwarded-Prefix": "/bot"}).status_code == 200
    # PUBLIC_BASE_URL wins over the forwarded host and scheme.
    assert signed_post(client, PATH + "?x=1", new_form(twilio_fake, 2), twilio_fake.auth_token,
                       "https://host.example.net/bot/webhook/whatsapp?x=1", PROXY).status_code == 403


@pytest.mark.parametrize("configured", ["https://bot.example.com/bot", "https://bot.example.com/bot/"])
def test_public_base_url_with_a_path_is_the_prefix_and_is_never_doubled(make_app, twilio_fake, configured):
    app = make_app(start_workers=False, public_base_url=configured, trusted_proxy_count=1)
    client = app.test_client()
    signed = "https://bot.example.com/bot/webhook/whatsapp?x=1"
    with_header = signed_post(client, PATH + "?x=1", new_form(twilio_fake, 1), twilio_fake.auth_token, signed,
                              {"X-Forwarded-Prefix": "/bot"})
    without_header = signed_post(client, PATH + "?x=1", new_form(twilio_fake, 2), twilio_fake.auth_token, signed)
    doubled = signed_post(client, PATH + "?x=1", new_form(twilio_fake, 3), twilio_fake.auth_token,
                          "https://bot.example.com/bot/bot/webhook/whatsapp?x=1", {"X-Forwarded-Prefix": "/bot"})
    assert (with_header.status_code, without_header.status_code, doubled.status_code) == (200, 200, 403)
    assert app.extensions["endrigo"].status_callback_url() == "https://bot.example.com/bot/webhook/whatsapp/status"


def _through_proxy_fix(**builder) -> Request:
    """A request as the app sees it: built like a WSGI server builds it, then through ProxyFix."""
    overrides = builder.pop("environ_overrides", {})
    environ = EnvironBuilder(**builder, environ_overrides=overrides).get_environ()
    seen = {}

    def app(env, start_response):
        seen["env"] = env
        return []

    ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)(environ, lambda *a: None)
    return Request(seen["env"])


@pytest.mark.parametrize("builder, public_base_url, expected", [
    # gunicorn's RAW_URI includes its own SCRIPT_NAME; a proxy prefix replaces it (as ProxyFix does).
    (dict(path="/webhook/whatsapp", base_url="http://10.0.0.5:8000/app", query_string="b=2&a=1",
          environ_overrides={"RAW_URI": "/app/webhook/whatsapp?b=2&a=1"},
          headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "h.example", "X-Forwarded-Prefix": "/bot"}),
     None, "https://h.example/bot/webhook/whatsapp?b=2&a=1"),
    (dict(path="/webhook/whatsapp", base_url="http://10.0.0.5:8000/app",
          environ_overrides={"RAW_URI": "/app/webhook/whatsapp"}),
     None, "http://10.0.0.5:8000/app/webhook/whatsapp"),
    # The percent-encoding of the target as sent is kept.
    (dict(path="/webhook/whatsapp", environ_overrides={"RAW_URI": "/webhook/whats%61pp?q=%2F"}),
     "https://bot.example.com", "https://bot.example.com/webhook/whats%61pp?q=%2F"),
    # Absolute-form targets keep only their path and query.
    (dict(path="/webhook/whatsapp", environ_overrides={"RAW_URI": "http://internal:8000/webhook/whatsapp?x=1"}),
     "https://bot.example.com", "https://bot.example.com/webhook/whatsapp?x=1"),
    # No raw target at all (another server): PATH_INFO and QUERY_STRING.
    (dict(path="/webhook/whatsapp", query_string="z=1&a=2", environ_overrides={"RAW_URI": "", "REQUEST_URI": ""},
          headers={"X-Forwarded-Prefix": "/bot"}),
     "https://bot.example.com", "https://bot.example.com/bot/webhook/whatsapp?z=1&a=2"),
    (dict(path="/webhook/whatsapp", headers={"X-Forwarded-Prefix": "/bot"}),
     "https://bot.example.com/base", "https://bot.example.com/base/webhook/whatsapp"),
])
def test_public_request_url_cases(builder, public_base_url, expected):
    request = _through_proxy_fix(**builder)
    assert public_request_url(request, public_base_url) == expected
    assert expected.startswith(public_app_url(request, public_base_url) + "/webhook/")


# ---- SharedKey signatures (TWILIO_WEBHOOK_SHARED_KEYS) -----------------------------------------

OLD_KEY, OLD_SECRET = "webhooks_sharedkey_old01", "old-shared-secret-0123456789abcdef"
NEW_KEY, NEW_SECRET = "webhooks_sharedkey_new02", "new-shared-secret-base64+/=="


def shared_key_post(client, form, *, key_id, secret, algorithm="HMAC_SHA256", path=PATH):
    url = "https://bot.example.com" + path
    signature = RequestValidator(secret).compute_signature(url, form, algorithm=algorithm)
    return client.post(path, data=form, headers={
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": f"key={key_id},algorithm={algorithm}",
    })


@pytest.fixture
def client(make_app):
    return make_app(start_workers=False).test_client()


@pytest.fixture
def shared_key_app(make_app):
    return make_app(start_workers=False, twilio_webhook_shared_keys=f"{OLD_KEY}={OLD_SECRET}, {NEW_KEY}={NEW_SECRET}")


def test_shared_key_signature_is_checked_with_the_named_keys_secret(shared_key_app, twilio_fake):
    client = shared_key_app.test_client()
    form = twilio_fake.inbound_form()
    assert shared_key_post(client, form, key_id=NEW_KEY, secret=NEW_SECRET).status_code == 200
    assert count(shared_key_app, Message) == 1


def test_shared_key_rotation_accepts_both_keys(shared_key_app, twilio_fake):
    client = shared_key_app.test_client()
    old = shared_key_post(client, twilio_fake.inbound_form(MessageSid="SM" + "a" * 32), key_id=OLD_KEY,
                          secret=OLD_SECRET)
    new = shared_key_post(client, twilio_fake.inbound_form(MessageSid="SM" + "b" * 32), key_id=NEW_KEY,
                          secret=NEW_SECRET)
    sha1 = shared_key_post(client, twilio_fake.inbound_form(MessageSid="SM" + "c" * 32), key_id=OLD_KEY,
                           secret=OLD_SECRET, algorithm="HMAC_SHA1")
    assert (old.status_code, new.status_code, sha1.status_code) == (200, 200, 200)
    assert count(shared_key_app, Message) == 3


def test_shared_key_with_a_wrong_secret_is_refused(shared_key_app, twilio_fake):
    client = shared_key_app.test_client()
    form = twilio_fake.inbound_form()
    other_keys_secret = shared_key_post(client, form, key_id=NEW_KEY, secret=OLD_SECRET)
    auth_token = shared_key_post(client, form, key_id=NEW_KEY, secret=twilio_fake.auth_token)
    made_up = shared_key_post(client, form, key_id=NEW_KEY, secret="guessed-secret-value")
    # The algorithm is part of what is checked: a SHA-1 signature announced as SHA-256 fails.
    wrong_algorithm = client.post(PATH, data=form, headers={
        "X-Twilio-Signature": RequestValidator(NEW_SECRET).compute_signature("https://bot.example.com" + PATH,
                                                                              form, algorithm="HMAC_SHA1"),
        "X-Twilio-Webhooks-Signature-Settings": f"key={NEW_KEY},algorithm=HMAC_SHA256",
    })
    statuses = [r.status_code for r in (other_keys_secret, auth_token, made_up, wrong_algorithm)]
    assert statuses == [403, 403, 403, 403]
    assert count(shared_key_app, Message) == 0


@pytest.mark.parametrize("settings_header", ["key=webhooks_sharedkey_unknown,algorithm=HMAC_SHA256",
                                             "key=,algorithm=HMAC_SHA256", f"key={OLD_KEY}x,algorithm=HMAC_SHA256"])
def test_shared_key_with_an_unknown_id_is_refused(shared_key_app, twilio_fake, settings_header):
    client = shared_key_app.test_client()
    form = twilio_fake.inbound_form()
    url = "https://bot.example.com" + PATH
    for secret in (OLD_SECRET, twilio_fake.auth_token):  # whatever it was signed with
        response = client.post(PATH, data=form, headers={
            "X-Twilio-Signature": RequestValidator(secret).compute_signature(url, form, algorithm="HMAC_SHA256"),
            "X-Twilio-Webhooks-Signature-Settings": settings_header,
        })
        assert response.status_code == 403
        assert response.data == b"unknown signing key"
    assert count(shared_key_app, Message) == 0


def test_a_named_key_is_refused_when_no_shared_keys_are_configured(client, twilio_fake):
    form = twilio_fake.inbound_form()
    response = shared_key_post(client, form, key_id="webhooks_sharedkey_x", secret=twilio_fake.auth_token)
    assert response.status_code == 403


def test_status_callbacks_are_checked_with_shared_keys_too(shared_key_app, twilio_fake):
    client = shared_key_app.test_client()
    form = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "delivered", "AccountSid": twilio_fake.account_sid}
    path = PATH + "/status"
    assert shared_key_post(client, form, key_id=OLD_KEY, secret=OLD_SECRET, path=path).status_code == 200
    assert shared_key_post(client, form, key_id=OLD_KEY, secret=NEW_SECRET, path=path).status_code == 403


def test_shared_key_secrets_never_reach_the_logs(shared_key_app):
    import logging

    from app.logging import RedactingFormatter

    record = logging.LogRecord("app.test", logging.WARNING, __file__, 1, "keys %s and %s", (OLD_SECRET, NEW_SECRET),
                               None)
    line = RedactingFormatter("%(message)s").format(record)
    assert OLD_SECRET not in line and NEW_SECRET not in line and "[secret]" in line
    assert NEW_SECRET not in repr(shared_key_app.extensions["endrigo"].settings)


# ---- JSON bodies signed through bodySHA256 --------------------------------------------------------

def json_post(client, body: bytes, *, token, hash_of: bytes | None = None, signed_query: str | None = None,
              content_type="application/json"):
    """POST ``body`` as Twilio posts a JSON body: the SHA-256 of ``hash_of`` (default: the body)
    in the query, the signature over the URL alone."""
    digest = hashlib.sha256(body if hash_of is None else hash_of).hexdigest()
    query = signed_query or f"?bodySHA256={digest}"
    signature = RequestValidator(token).compute_signature("https://bot.example.com" + PATH + query, {})
    return client.post(PATH + query, data=body, content_type=content_type, headers={"X-Twilio-Signature": signature})


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False)


def test_a_json_body_matching_its_body_sha256_is_accepted(app, twilio_fake):
    form = new_form(twilio_fake, 1)
    body = json.dumps(form).encode()
    response = json_post(app.test_client(), body, token=twilio_fake.auth_token)
    assert response.status_code == 200
    # Exactly what Twilio's own validator accepts for that URL and body.
    digest = hashlib.sha256(body).hexdigest()
    url = f"https://bot.example.com{PATH}?bodySHA256={digest}"
    assert RequestValidator(twilio_fake.auth_token).validate(
        url, body.decode(), RequestValidator(twilio_fake.auth_token).compute_signature(url, {}))
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(Message.body).where(Message.provider_sid == form["MessageSid"])) == "Oi"


def test_a_tampered_json_body_is_refused(app, twilio_fake):
    body = json.dumps(new_form(twilio_fake, 1)).encode()
    tampered = body.replace(b'"Oi"', b'"Oi!"')
    client = app.test_client()
    response = json_post(client, tampered, token=twilio_fake.auth_token, hash_of=body)
    assert response.status_code == 403 and response.data == b"body does not match bodySHA256"
    # A hash of the new body in the query does not help: the query is signed.
    digest = hashlib.sha256(body).hexdigest()
    forged = client.post(f"{PATH}?bodySHA256={hashlib.sha256(tampered).hexdigest()}", data=tampered,
                         content_type="application/json",
                         headers={"X-Twilio-Signature": RequestValidator(twilio_fake.auth_token).compute_signature(
                             f"https://bot.example.com{PATH}?bodySHA256={digest}", {})})
    assert forged.status_code == 403
    assert count(app) == 0


@pytest.mark.parametrize("query", ["?bodySHA256=", "?bodySHA256=%ff%fe", "?bodySHA256=abc&bodySHA256=abc",
                                   "?bodySHA256=z%C3%A9"])
def test_a_malformed_body_sha256_is_refused_not_a_5xx(app, twilio_fake, query):
    response = json_post(app.test_client(), b'{"MessageSid": "x"}', token=twilio_fake.auth_token, signed_query=query)
    assert response.status_code == 403


def test_a_form_body_with_body_sha256_is_signed_without_its_parameters(app, twilio_fake):
    """The rule follows the query, whatever the content type says."""
    form = new_form(twilio_fake, 1)
    client = app.test_client()
    from urllib.parse import urlencode

    body = urlencode(form).encode()
    ok = json_post(client, body, token=twilio_fake.auth_token, content_type="application/x-www-form-urlencoded")
    assert ok.status_code == 200 and count(app) == 1
    tampered = body.replace(b"Body=Oi", b"Body=Tchau")
    refused = json_post(client, tampered, token=twilio_fake.auth_token, hash_of=body,
                        content_type="application/x-www-form-urlencoded")
    assert refused.status_code == 403 and count(app) == 1


def test_body_sha256_is_checked_even_when_signatures_are_off(make_app, twilio_fake):
    app = make_app(start_workers=False, twilio_validate_signature=False)
    body = json.dumps(new_form(twilio_fake, 1)).encode()
    client = app.test_client()
    assert json_post(client, body.replace(b"Oi", b"Ol"), token="x", hash_of=body).status_code == 403
    assert json_post(client, body, token="x").status_code == 200


@pytest.mark.parametrize("body, reason", [
    (b"{not json", b"the JSON body is not valid JSON"),
    (b"\xff\xfe{}", b"the JSON body is not valid JSON"),
    (b'["MessageSid"]', b"the JSON body is not an object"),
    (b'{"MessageSid": {"nested": 1}}', b"the JSON field MessageSid is not a plain value"),
    (b'{"From": "whatsapp:+5511999990001"}', b"MessageSid is missing"),
])
def test_a_signed_json_body_that_is_not_a_message_gets_400_with_a_reason(app, twilio_fake, body, reason):
    response = json_post(app.test_client(), body, token=twilio_fake.auth_token)
    assert (response.status_code, response.data) == (400, reason)
