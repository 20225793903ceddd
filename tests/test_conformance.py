"""The request conformance checker (tests/fakes/conformance.py) against the official specs.

Every test that uses ``twilio_fake``/``openai_fake`` is checked at teardown; these tests prove
the checker itself: it accepts what the SDKs send for valid calls and refuses what the real
API would refuse.
"""
from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

from tests.fakes import conformance
from tests.fakes.base import CaseInsensitiveDict, RecordedRequest

available, reason = conformance.specs_available()
pytestmark = pytest.mark.skipif(not available, reason=reason)

ACCOUNT = "AC" + "a" * 32
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
BASIC = {"Authorization": "Basic QUM6dG9rZW4="}
BEARER = {"Authorization": "Bearer sk-test"}


def form_request(path: str, form: dict, headers=BASIC, method: str = "POST") -> RecordedRequest:
    body = urlencode(form, doseq=True).encode()
    return RecordedRequest(method, path, {}, CaseInsensitiveDict(
        {**headers, "Content-Type": "application/x-www-form-urlencoded"}.items()), body, form)


def json_request(path: str, payload, headers=BEARER) -> RecordedRequest:
    return RecordedRequest("POST", path, {}, CaseInsensitiveDict({**headers, "Content-Type": "application/json"}.items()),
                           json.dumps(payload).encode(), None, payload)


def get_request(path: str, query: dict, headers=BASIC) -> RecordedRequest:
    return RecordedRequest("GET", path, query, CaseInsensitiveDict(headers.items()), b"")


# -- Twilio ------------------------------------------------------------------------------------
def test_valid_message_create_passes():
    request = form_request(MESSAGES, {"To": "whatsapp:+5511999990001", "From": "whatsapp:+14155238886",
                                      "Body": "Olá", "StatusCallback": "https://bot.example.com/status",
                                      "MediaUrl": ["https://bot.example.com/m/1.ogg"]})
    assert conformance.validate("twilio", request) is None
    template = form_request(MESSAGES, {"To": "whatsapp:+5511999990001", "From": "whatsapp:+14155238886",
                                       "ContentSid": "HX" + "0" * 32, "ContentVariables": '{"1": "Ana"}'})
    assert conformance.validate("twilio", template) is None


def test_message_create_without_to_fails():
    violation = conformance.validate("twilio", form_request(MESSAGES, {"From": "whatsapp:+1415", "Body": "x"}))
    assert violation is not None and "'To' is a required property" in violation.error


@pytest.mark.parametrize("field, value, fragment", [
    ("Attempt", "three", "integer"),  # integer field
    ("ProvideFeedback", "maybe", "boolean"),
    ("ContentSid", "HX123", "ContentSid"),  # pattern ^HX[0-9a-fA-F]{32}$
    ("ContentRetention", "forever", "ContentRetention"),  # enum
])
def test_message_create_with_a_wrongly_typed_field_fails(field, value, fragment):
    violation = conformance.validate("twilio", form_request(MESSAGES, {"To": "+5511999990001", "Body": "x", field: value}))
    assert violation is not None and fragment in violation.error, violation


def test_twilio_requests_need_basic_auth_and_a_real_account_sid():
    no_auth = form_request(MESSAGES, {"To": "+5511999990001", "Body": "x"}, headers={})
    assert "Security" in conformance.validate("twilio", no_auth).error
    bad_account = form_request("/2010-04-01/Accounts/ACshort/Messages.json", {"To": "+5511999990001", "Body": "x"})
    assert conformance.validate("twilio", bad_account) is not None


def test_message_list_parameters():
    ok = get_request(MESSAGES, {"To": "whatsapp:+5511999990001", "DateSent>": "2026-11-30T12:00:00Z",
                                "PageSize": "20", "Page": "1", "PageToken": "PA" + "SM" + "0" * 32})
    assert conformance.validate("twilio", ok) is None
    assert conformance.validate("twilio", get_request(MESSAGES, {"PageSize": "twenty"})) is not None


def test_skipped_endpoints_are_listed_not_silently_accepted():
    typing = form_request("/v2/Indicators/Typing.json", {"channel": "whatsapp", "messageId": "SM" + "0" * 32})
    assert conformance.validate("twilio", typing) is None
    assert conformance.skip_reason("twilio", "/v2/Indicators/Typing.json")
    assert conformance.skip_reason("twilio", "/cdn/abc")
    unknown = form_request(f"/2010-04-01/Accounts/{ACCOUNT}/NoSuchThing.json", {"x": "1"})
    assert "not found" in conformance.validate("twilio", unknown).error.lower()


def test_the_emulators_record_what_the_checker_takes(twilio_fake):
    """End to end: a request the real SDK sends is recorded by the fake and accepted."""
    from twilio.rest import Client

    client = Client(twilio_fake.account_sid, twilio_fake.auth_token)
    client.api.base_url = twilio_fake.base_url
    client.messages.create(to="whatsapp:+5511999990001", from_=twilio_fake.number, body="oi")
    client.messages.list(to="whatsapp:+5511999990001", limit=5)
    assert conformance.violations("twilio", twilio_fake.requests) == []
    assert len(twilio_fake.requests) == 2


# -- OpenAI ------------------------------------------------------------------------------------
def test_valid_responses_request_passes():
    request = json_request("/v1/responses", {
        "model": "gpt-5.4-mini", "instructions": "Seja breve.", "store": False, "max_output_tokens": 500,
        "input": [{"role": "user", "content": "Qual o horário?"},
                  {"type": "function_call_output", "call_id": "call_1", "output": "9h"}],
        "tools": [{"type": "function", "name": "hours", "description": "Horário", "strict": True,
                   "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False}}],
    })
    assert conformance.validate("openai", request) is None


@pytest.mark.parametrize("payload, fragment", [
    ({"model": "gpt-5.4-mini", "input": 42}, "input"),
    ({"model": "gpt-5.4-mini", "input": "oi", "tools": [{"type": "function"}]}, "tools"),
    ({"model": "gpt-5.4-mini", "input": "oi", "temperature": "hot"}, "temperature"),
])
def test_responses_request_with_a_bad_shape_fails(payload, fragment):
    violation = conformance.validate("openai", json_request("/v1/responses", payload))
    assert violation is not None and fragment in violation.error, violation


def test_openai_requests_need_a_bearer_key():
    violation = conformance.validate("openai", json_request("/v1/responses", {"model": "m", "input": "x"}, headers={}))
    assert violation is not None and "Security" in violation.error


def test_multipart_transcription_is_checked_field_by_field():
    def upload(fields: dict) -> RecordedRequest:
        return RecordedRequest("POST", "/v1/audio/transcriptions", {}, CaseInsensitiveDict(
            {**BEARER, "Content-Type": "multipart/form-data; boundary=x"}.items()), b"--x--", fields,
            files={"file": ("a.ogg", "audio/ogg", b"OggS")})

    assert conformance.validate("openai", upload({"model": "gpt-transcribe", "temperature": "0"})) is None
    assert "languag" in conformance.validate("openai", upload({"model": "gpt-transcribe", "languag": "pt"})).error
    no_model = conformance.validate("openai", upload({"temperature": "0"}))
    assert no_model is not None and "'model' is a required property" in no_model.error


def test_the_openai_spec_is_parsed_once_per_session():
    started = time.perf_counter()
    first = conformance.load_spec("openai")
    assert conformance.load_spec("openai") is first
    assert time.perf_counter() - started < 30
    assert conformance.parse_seconds["openai"] < 30  # measured ~0.8 s (C YAML loader) on the CI machine


def test_missing_specs_directory_gives_a_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARED_SPECS_DIR", str(tmp_path / "nowhere"))
    ok, why = conformance.specs_available()
    assert not ok and "not found" in why and "SHARED_SPECS_DIR" in why


@pytest.mark.nonconformant_ok  # sends a request Twilio would refuse, to see the teardown check catch it
def test_the_teardown_check_fails_a_test_whose_requests_the_api_would_refuse(twilio_fake, monkeypatch):
    from types import SimpleNamespace

    import requests

    from tests.fakes import fixtures

    url = f"{twilio_fake.base_url}/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json"
    requests.post(url, data={"From": twilio_fake.number, "Body": "x"},
                  auth=(twilio_fake.account_sid, twilio_fake.auth_token), timeout=5)
    unmarked = SimpleNamespace(node=SimpleNamespace(get_closest_marker=lambda name: None))
    with pytest.raises(pytest.fail.Exception, match="'To' is a required property"):
        fixtures._check_conformance(unmarked, "twilio", twilio_fake)
    monkeypatch.setenv("API_CONFORMANCE", "0")
    fixtures._check_conformance(unmarked, "twilio", twilio_fake)  # switched off: no failure
