"""The provider emulators, proven with the real SDKs (twilio, openai, elevenlabs) over real HTTP.

If these pass, a test that uses a fake exercises the same SDK code paths, auth, validation
and error handling as production would against the provider.
"""
from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import openai
import pytest
import requests
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError
from openai import OpenAI
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.wrappers import Response

from tests.fakes import audio_samples
from tests.fakes.base import FakeServer
from tests.fakes.elevenlabs_fake import DEFAULT_VOICE
from tests.fakes.openai_fake import decoded_seconds, reasoning_item, web_search_call_item

CUSTOMER = "whatsapp:+5511999990001"


class Receiver(FakeServer):
    """A webhook endpoint that records what it gets (for status callbacks)."""

    def handle(self, request):
        return Response("<Response/>", content_type="text/xml")


@pytest.fixture
def twilio_client(twilio_fake):
    client = Client(twilio_fake.account_sid, twilio_fake.auth_token)
    client.api.base_url = twilio_fake.base_url  # every Api (2010-04-01) URL is built from this
    return client


@pytest.fixture
def oai(openai_fake):
    return OpenAI(api_key=openai_fake.api_key, base_url=openai_fake.v1_url, max_retries=0)


@pytest.fixture
def eleven(elevenlabs_fake):
    return ElevenLabs(api_key=elevenlabs_fake.api_key, base_url=elevenlabs_fake.base_url)


# -- Twilio ------------------------------------------------------------------------------------
def test_twilio_sdk_sends_and_fetches_through_the_fake(twilio_fake, twilio_client):
    message = twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="Olá!",
                                            status_callback="http://127.0.0.1:1/status")
    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert (message.status, message.direction, message.num_media) == ("queued", "outbound-api", "0")
    assert message.error_code is None and message.date_created is not None
    assert twilio_fake.sent == [{"sid": message.sid, "to": CUSTOMER, "from_": twilio_fake.number, "body": "Olá!",
                                 "media_url": None, "status_callback": "http://127.0.0.1:1/status",
                                 "messaging_service_sid": None, "content_sid": None, "content_variables": None}]
    recorded = twilio_fake.requests_to("/Messages.json")[0]
    assert recorded.form["Body"] == "Olá!" and recorded.headers["authorization"].startswith("Basic ")
    assert twilio_client.messages(message.sid).fetch().body == "Olá!"


@pytest.mark.nonconformant_ok  # sends what the real API refuses, on purpose
def test_twilio_refuses_wrong_or_missing_credentials(twilio_fake):
    bad = Client(twilio_fake.account_sid, "wrong-token")
    bad.api.base_url = twilio_fake.base_url
    with pytest.raises(TwilioRestException) as err:
        bad.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="x")
    assert (err.value.status, err.value.code) == (401, 20003)
    anonymous = requests.post(f"{twilio_fake.base_url}/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json",
                              data={"To": CUSTOMER, "From": twilio_fake.number, "Body": "x"}, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"code": 20003, "message": "Authenticate",
                                "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}
    assert twilio_fake.sent == []


def test_twilio_body_limit_is_1600_characters(twilio_fake, twilio_client):
    twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="a" * 1600)
    with pytest.raises(TwilioRestException) as err:
        twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="a" * 1601)
    assert (err.value.status, err.value.code) == (400, 21617)


@pytest.mark.nonconformant_ok  # sends what the real API refuses, on purpose
@pytest.mark.parametrize("form, code", [
    ({"From": "whatsapp:+14155238886", "Body": "x"}, 21604),
    ({"To": CUSTOMER, "Body": "x"}, 21603),
    ({"To": CUSTOMER, "From": "whatsapp:+14155238886"}, 21602),
    ({"To": "+5511999990001", "From": "whatsapp:+14155238886", "Body": "x"}, 21910),
    ({"To": CUSTOMER, "From": "whatsapp:+14155238886", "MediaUrl": ["http://127.0.0.1/a", "http://127.0.0.1/b"]},
     21623),
    ({"To": CUSTOMER, "From": "whatsapp:+19999999999", "Body": "x"}, 63007),
])
def test_twilio_validates_like_the_api(twilio_fake, form, code):
    response = requests.post(f"{twilio_fake.base_url}/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json",
                             data=form, auth=(twilio_fake.account_sid, twilio_fake.auth_token), timeout=5)
    assert (response.status_code, response.json()["code"]) == (400, code)


def test_twilio_media_needs_auth_then_redirects_to_cdn(twilio_fake):
    voice = audio_samples.speech_like_ogg(1.0)
    url = twilio_fake.add_media(voice, "audio/ogg")
    assert "/Messages/MM" in url and "/Media/ME" in url
    assert requests.get(url, timeout=5).status_code == 401
    auth = (twilio_fake.account_sid, twilio_fake.auth_token)
    redirect = requests.get(url, auth=auth, allow_redirects=False, timeout=5)
    assert redirect.status_code == 307
    location = redirect.headers["Location"]
    assert location.startswith(twilio_fake.base_url + "/cdn/")
    cdn = requests.get(location, timeout=5)  # the CDN link needs no credentials
    assert (cdn.content, cdn.headers["Content-Type"]) == (voice, "audio/ogg")
    assert requests.get(url, auth=auth, timeout=5).content == voice
    assert [r.path.startswith("/cdn/") for r in twilio_fake.requests] == [False, False, True, False, True]


def test_twilio_status_callback_is_signed_like_twilio(twilio_fake, twilio_client):
    with Receiver() as receiver:
        callback = receiver.base_url + "/twilio/status?x=1"
        sid = twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="oi",
                                            status_callback=callback).sid
        assert twilio_fake.deliver(sid, "undelivered", 63016, "Outside the 24h window").status_code == 200
        got = receiver.requests[0]
    assert got.path == "/twilio/status" and got.query == {"x": "1"}
    assert got.form["MessageSid"] == sid and got.form["MessageStatus"] == "undelivered"
    assert got.form["ErrorCode"] == "63016" and got.form["AccountSid"] == twilio_fake.account_sid
    assert RequestValidator(twilio_fake.auth_token).validate(callback, got.form, got.headers["X-Twilio-Signature"])
    assert not RequestValidator("other").validate(callback, got.form, got.headers["X-Twilio-Signature"])
    assert twilio_client.messages(sid).fetch().error_code == 63016


def test_twilio_inbound_form_looks_like_a_voice_note(twilio_fake):
    form = twilio_fake.inbound_form(body="", media=(b"OggS...", "audio/ogg"))
    assert form["MessageSid"].startswith("MM") and len(form["MessageSid"]) == 34
    assert (form["NumMedia"], form["MessageType"], form["MediaContentType0"]) == ("1", "audio", "audio/ogg")
    assert form["WaId"] == "5511999990001" and form["To"] == "whatsapp:+14155238886"
    assert form["MediaUrl0"].startswith(twilio_fake.base_url)
    url = "https://bot.example/twilio/whatsapp"
    assert RequestValidator(twilio_fake.auth_token).validate(url, form, twilio_fake.sign(url, form))


def test_twilio_fault_injection(twilio_fake, twilio_client):
    twilio_fake.fail_next(503, path_contains="/Messages.json")
    with pytest.raises(TwilioRestException) as err:  # the Twilio SDK does not retry
        twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="x")
    assert (err.value.status, err.value.code) == (503, 20503)
    assert twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="x").status == "queued"


def _hex32() -> str:
    return secrets.token_hex(16)


def test_twilio_list_filters_and_pages_newest_first(twilio_fake, twilio_client):
    base = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    other = "whatsapp:+5511999990002"
    for i in range(60):
        twilio_fake.add_message(CUSTOMER, f"m{i}", date_sent=base + timedelta(minutes=i))
    for i in range(5):
        twilio_fake.add_message(other, f"o{i}", date_sent=base + timedelta(minutes=i))
    twilio_fake.add_message(CUSTOMER, "from elsewhere", from_="whatsapp:+14150000000", date_sent=base)

    listed = twilio_client.messages.list(to=CUSTOMER, from_=twilio_fake.number, page_size=20)
    assert [m.body for m in listed] == [f"m{i}" for i in reversed(range(60))]  # newest first
    pages = twilio_fake.requests_to("/Messages.json")
    assert len(pages) == 3 and all(r.query["PageSize"] == "20" for r in pages)
    assert [r.query.get("Page") for r in pages] == [None, "1", "2"]
    assert pages[1].query["PageToken"] == "PA" + listed[19].sid and pages[1].query["To"] == CUSTOMER

    # DateSent> / DateSent< are inclusive bounds; the SDK sends datetimes as %Y-%m-%dT%H:%M:%SZ
    twilio_fake.requests.clear()
    after = twilio_client.messages.list(to=CUSTOMER, date_sent_after=base + timedelta(minutes=50), page_size=20)
    assert [m.body for m in after] == [f"m{i}" for i in reversed(range(50, 60))]
    assert twilio_fake.requests[0].query["DateSent>"] == "2026-11-30T12:50:00Z"
    window = twilio_client.messages.list(to=CUSTOMER, from_=twilio_fake.number,
                                         date_sent_after=base + timedelta(minutes=10),
                                         date_sent_before=base + timedelta(minutes=14))
    assert [m.body for m in window] == ["m14", "m13", "m12", "m11", "m10"]
    # DateSent matches the day (the spec types it date-time, so a bare "2026-11-30" would be refused)
    assert len(twilio_client.messages.list(date_sent=datetime(2026, 11, 30, tzinfo=timezone.utc))) == 66
    assert twilio_client.messages.list(date_sent=datetime(2026, 11, 29, tzinfo=timezone.utc)) == []
    assert len(twilio_client.messages.list(to=CUSTOMER, limit=25, page_size=20)) == 25
    assert [m.body for m in twilio_client.messages.list(to=other)] == ["o4", "o3", "o2", "o1", "o0"]
    first = twilio_client.messages.list(to=CUSTOMER, limit=1)[0]
    assert (first.direction, first.status, first.num_media, first.error_code) == ("outbound-api", "delivered", "0",
                                                                                  None)
    assert first.date_sent == base + timedelta(minutes=59)


def test_twilio_list_envelope_is_twilios(twilio_fake):
    for i in range(3):
        twilio_fake.add_message(CUSTOMER, f"m{i}")
    url = f"{twilio_fake.base_url}/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json"
    auth = (twilio_fake.account_sid, twilio_fake.auth_token)
    page = requests.get(url, params={"To": CUSTOMER, "PageSize": 2}, auth=auth, timeout=5).json()
    assert set(page) == {"messages", "page", "page_size", "first_page_uri", "next_page_uri", "previous_page_uri",
                         "uri", "start", "end"}
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["previous_page_uri"] is None and "Page=1" in page["next_page_uri"]
    assert {"sid", "body", "to", "from", "status", "num_media", "date_created", "date_sent", "date_updated",
            "direction", "error_code", "error_message", "subresource_uris", "uri", "account_sid"} <= set(page["messages"][0])
    second = requests.get(twilio_fake.base_url + page["next_page_uri"], auth=auth, timeout=5).json()
    assert (len(second["messages"]), second["next_page_uri"], second["start"]) == (1, None, 2)
    assert "PageToken=PB" in second["previous_page_uri"]
    back = requests.get(twilio_fake.base_url + second["previous_page_uri"], auth=auth, timeout=5).json()
    assert [m["sid"] for m in back["messages"]] == [m["sid"] for m in page["messages"]]
    assert requests.get(url, auth=("AC" + "0" * 32, "x"), timeout=5).status_code == 401


def test_twilio_media_list_of_a_sent_message(twilio_fake, twilio_client):
    sid = twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number,
                                        media_url=["https://bot.example.com/media/abc/voice.ogg"]).sid
    media = twilio_client.messages(sid).media.list()
    assert len(media) == 1 and media[0].content_type == "audio/ogg" and media[0].parent_sid == sid
    assert twilio_client.messages(sid).media(media[0].sid).fetch().sid == media[0].sid
    assert twilio_fake.sent[0]["media_url"] == "https://bot.example.com/media/abc/voice.ogg"
    assert twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="x").subresource_uris["media"]


def test_twilio_typing_indicator_through_the_real_sdk(twilio_fake, twilio_client):
    twilio_client.messaging.base_url = twilio_fake.base_url  # messaging.twilio.com -> the fake
    inbound = twilio_fake.inbound_form()["MessageSid"]
    result = twilio_client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=inbound)
    assert result.success is True
    assert [(t["channel"], t["message_id"]) for t in twilio_fake.typing_indicators] == [("whatsapp", inbound)]
    recorded = twilio_fake.requests_to("/Indicators/Typing")[0]
    assert (recorded.method, recorded.path, recorded.form) == ("POST", "/v2/Indicators/Typing.json",
                                                               {"channel": "whatsapp", "messageId": inbound})
    assert recorded.headers["authorization"] == twilio_fake.basic_auth_header()
    for channel, message_id in (("whatsapp", "SM123"), ("whatsapp", "XX" + _hex32()), ("sms", inbound)):
        with pytest.raises(TwilioRestException) as err:
            twilio_client.messaging.v2.typing_indicator.create(channel=channel, message_id=message_id)
        assert (err.value.status, err.value.code) == (400, 20001)
    twilio_fake.fail_next(503, path_contains="/Indicators/Typing")
    with pytest.raises(TwilioRestException) as err:
        twilio_client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=inbound)
    assert err.value.status == 503
    bad = Client(twilio_fake.account_sid, "wrong")
    bad.messaging.base_url = twilio_fake.base_url
    with pytest.raises(TwilioRestException) as err:
        bad.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=inbound)
    assert (err.value.status, err.value.code) == (401, 20003)
    assert len(twilio_fake.typing_indicators) == 1


def test_twilio_content_template_send(twilio_fake, twilio_client):
    content_sid = "HX" + _hex32()
    message = twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, content_sid=content_sid,
                                            content_variables=json.dumps({"1": "Ana", "2": "amanhã"}))
    assert message.status == "queued"
    record = twilio_fake.sent[0]
    assert (record["content_sid"], json.loads(record["content_variables"])) == (content_sid, {"1": "Ana", "2": "amanhã"})
    assert record["body"] is None
    for variables in ("not json", "[1, 2]"):
        with pytest.raises(TwilioRestException) as err:
            twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, content_sid=content_sid,
                                          content_variables=variables)
        assert (err.value.status, err.value.code) == (400, 21656)
    assert len(twilio_fake.sent) == 1


@pytest.mark.nonconformant_ok  # a malformed ContentSid breaks the spec's pattern, on purpose
def test_twilio_refuses_a_malformed_content_sid(twilio_fake, twilio_client):
    with pytest.raises(TwilioRestException) as err:
        twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, content_sid="HX123")
    assert (err.value.status, err.value.code) == (400, 21655)
    assert err.value.uri.endswith("/Messages.json") and "ContentSid" in err.value.msg
    assert twilio_fake.sent == []


def test_twilio_send_status_latency_and_one_shot_faults(twilio_fake, twilio_client):
    twilio_fake.send_status = "partially_delivered"
    assert twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="a").status == "partially_delivered"
    twilio_fake.send_status = None
    twilio_fake.send_latency = 0.3
    started = time.monotonic()
    twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="b")
    assert time.monotonic() - started >= 0.3
    twilio_fake.send_latency = 0.0
    twilio_fake.fail_sends(429, times=2)
    twilio_fake.fail_sends(400, 21211)
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="c").status)
        except TwilioRestException as exc:
            outcomes.append((exc.status, exc.code))
    assert outcomes == [(429, 20429), (429, 20429), (400, 21211), "queued"]
    twilio_fake.fail_sends(500)
    # a fault applies to sends only: listing and fetching still work
    assert len(twilio_client.messages.list(to=CUSTOMER)) == 3
    with pytest.raises(TwilioRestException) as err:
        twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="d")
    assert (err.value.status, err.value.code) == (500, 20500)
    assert twilio_fake.sends_per_body() == {"a": 1, "b": 1, "c": 1}
    assert twilio_fake.send_counts(to=CUSTOMER) == 3 and twilio_fake.send_counts(body="c") == 1


def test_twilio_closed_24h_window(twilio_fake, twilio_client):
    closed = "whatsapp:+5511999990009"
    twilio_fake.close_window(closed)
    with pytest.raises(TwilioRestException) as err:
        twilio_client.messages.create(to=closed, from_=twilio_fake.number, body="oi")
    assert (err.value.status, err.value.code) == (400, 63016)
    template = twilio_client.messages.create(to=closed, from_=twilio_fake.number, content_sid="HX" + _hex32())
    assert template.status == "queued"
    assert twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="oi").status == "queued"
    # What Twilio really does: accept (201), then fail the message with 63016.
    twilio_fake.closed_window_mode = "fail"
    sid = twilio_client.messages.create(to=closed, from_=twilio_fake.number, body="oi").sid
    fetched = twilio_client.messages(sid).fetch()
    assert (fetched.status, fetched.error_code) == ("failed", 63016)
    assert twilio_fake.sends_per_recipient() == {closed: 2, CUSTOMER: 1}


def test_twilio_accept_then_drop_leaves_an_unknown_outcome(twilio_fake, twilio_client):
    twilio_fake.drop_sends()
    with pytest.raises((TwilioException, requests.exceptions.ConnectionError)):
        twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="did it go?")
    assert twilio_fake.send_counts(to=CUSTOMER, body="did it go?") == 1  # Twilio did accept it
    found = twilio_client.messages.list(to=CUSTOMER, date_sent_after=datetime.now(timezone.utc) - timedelta(minutes=5))
    assert [m.body for m in found] == ["did it go?"]  # a reconciler finds it
    assert twilio_client.messages.create(to=CUSTOMER, from_=twilio_fake.number, body="next").status == "queued"


# -- OpenAI ------------------------------------------------------------------------------------
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"], "additionalProperties": False}}


@pytest.mark.nonconformant_ok  # sends what the real API refuses, on purpose
def test_openai_refuses_a_wrong_key(openai_fake):
    client = OpenAI(api_key="sk-wrong-key-0000", base_url=openai_fake.v1_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.responses.create(model="gpt-5.4-mini", input="oi")
    assert err.value.code == "invalid_api_key"
    assert requests.get(openai_fake.v1_url + "/models", timeout=5).status_code == 401


def test_openai_default_reply_echoes_the_last_user_text(oai):
    response = oai.responses.create(model="gpt-5.4-mini", instructions="Seja breve.",
                                    input=[{"role": "user", "content": "Qual o horário?"}])
    assert response.output_text == "[fake] Qual o horário?"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_openai_prompt_cache_counts_the_shared_prefix_per_key(openai_fake, oai):
    """cached_tokens: the prefix shared with an earlier request of the same prompt_cache_key,
    only from 1024 tokens on and in steps of 128; input_tokens: the whole request."""
    instructions = "Você é o assistente da Endrigo Digital. " * 200  # ~2000 tokens, the stable part

    def ask(text: str, key: str | None, instr: str = instructions):
        kwargs = {"prompt_cache_key": key} if key else {}
        return oai.responses.create(model="gpt-5.4-mini", instructions=instr,
                                    input=[{"role": "user", "content": text}], store=False, **kwargs).usage

    first = ask("Qual o horário?", "endrigo-user-1")
    assert first.input_tokens_details.cached_tokens == 0  # nothing earlier with this key
    assert first.input_tokens >= len(instructions) // 4
    second = ask("Quanto custa um site?", "endrigo-user-1")
    cached = second.input_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0
    assert cached <= second.input_tokens and second.input_tokens - cached < 128 + 40
    # Another key does not see user 1's prompts; requests without a key share their own bucket.
    assert ask("Quanto custa um site?", "endrigo-user-2").input_tokens_details.cached_tokens == 0
    assert ask("Oi", None).input_tokens_details.cached_tokens == 0
    assert ask("Olá", None).input_tokens_details.cached_tokens >= 1024
    # A shared prefix under 1024 tokens is not cached.
    short = "Seja breve. " * 100  # ~300 tokens
    ask("Oi", "endrigo-user-3", short)
    assert ask("Olá", "endrigo-user-3", short).input_tokens_details.cached_tokens == 0
    # A change at the very start (e.g. the time of day in the instructions) breaks the whole prefix.
    assert ask("Qual o horário?", "endrigo-user-1", "12:00 " + instructions).input_tokens_details.cached_tokens == 0


def test_openai_function_call_loop(openai_fake, oai):
    openai_fake.queue_function_call("get_weather", {"city": "Recife"})
    openai_fake.queue_text("Faz 30 °C em Recife.")
    first = oai.responses.create(model="gpt-5.4-mini", input="Tempo em Recife?", tools=[WEATHER_TOOL])
    call = first.output[0]
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Recife"})
    final = oai.responses.create(model="gpt-5.4-mini", previous_response_id=first.id, tools=[WEATHER_TOOL],
                                 input=[{"type": "function_call_output", "call_id": call.call_id, "output": "30"}])
    assert final.output_text == "Faz 30 °C em Recife."
    # Resending the items instead of previous_response_id works too.
    items = [{"role": "user", "content": "Tempo em Recife?"}, call.model_dump(exclude_none=True),
             {"type": "function_call_output", "call_id": call.call_id, "output": "30"}]
    assert oai.responses.create(model="gpt-5.4-mini", input=items).output_text == "[fake] Tempo em Recife?"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"input": [{"type": "function_call_output", "call_id": "call_made_up", "output": "x"}]}, "No tool call found"),
    ({"input": "oi", "tools": [{**WEATHER_TOOL, "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}]},
     "additionalProperties"),
    ({"input": "oi", "extra_body": {"prompt": {"id": "pmpt_1"}}}, "prompt"),
    ({"input": "oi", "extra_body": {"assistant_id": "asst_1"}}, "assistant_id"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]}, "output_text"),
])
def test_openai_refuses_what_the_api_refuses(oai, kwargs, fragment):
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model="gpt-5.4-mini", **kwargs)
    assert fragment in err.value.message


@pytest.mark.nonconformant_ok  # an input item type the API does not know, on purpose
def test_openai_refuses_an_input_item_of_an_unknown_type(oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model="gpt-5.4-mini", input=[{"role": "user", "content": "oi"},
                                                          {"type": "future_widget", "id": "fw_1", "payload": {}}])
    assert err.value.status_code == 400 and "Invalid value: 'future_widget'" in err.value.message
    assert err.value.param == "input[1].type"


def test_openai_injected_output_items_and_encrypted_reasoning(openai_fake, oai):
    openai_fake.inject_output([{"type": "future_widget", "payload": {"x": 1}}, web_search_call_item()])
    openai_fake.queue_output([reasoning_item(), {"type": "function_call", "name": "get_weather",
                                                 "arguments": {"city": "Recife"}}])
    first = oai.responses.create(model="gpt-5.4-mini", input="Tempo?", tools=[WEATHER_TOOL], store=False,
                                 include=["reasoning.encrypted_content"])
    assert [item.type for item in first.output] == ["future_widget", "web_search_call", "reasoning", "function_call"]
    reasoning, call = first.output[2], first.output[3]
    assert reasoning.encrypted_content.startswith("gAAAAA")
    # Sent back with its encrypted content, a reasoning item is accepted under store=false ...
    items = [{"role": "user", "content": "Tempo?"}, reasoning.model_dump(exclude_none=True),
             call.model_dump(exclude_none=True), {"type": "function_call_output", "call_id": call.call_id, "output": "30"}]
    assert oai.responses.create(model="gpt-5.4-mini", input=items, store=False).output_text == "[fake] Tempo?"
    # ... without it, the API has nothing to find it by.
    bare = dict(items[1])
    bare.pop("encrypted_content")
    with pytest.raises(openai.BadRequestError, match="Items are not persisted"):
        oai.responses.create(model="gpt-5.4-mini", input=[items[0], bare, *items[2:]], store=False)
    # Without the include, reasoning items carry no encrypted content; the injection was one-shot.
    openai_fake.queue_output([reasoning_item(), "ok"])
    second = oai.responses.create(model="gpt-5.4-mini", input="Oi")
    assert [item.type for item in second.output] == ["reasoning", "message"]
    assert second.output[0].encrypted_content is None


def test_openai_requires_an_output_for_every_call(openai_fake, oai):
    openai_fake.queue_output([{"type": "function_call", "name": "get_weather", "arguments": {"city": "A"}},
                              {"type": "function_call", "name": "get_weather", "arguments": {"city": "B"}}])
    first = oai.responses.create(model="gpt-5.4-mini", input="A e B?", tools=[WEATHER_TOOL])
    with pytest.raises(openai.BadRequestError, match="No tool output found"):
        oai.responses.create(model="gpt-5.4-mini", previous_response_id=first.id, tools=[WEATHER_TOOL],
                             input=[{"type": "function_call_output", "call_id": first.output[0].call_id,
                                     "output": "20"}])


def test_openai_refusal_and_incomplete(openai_fake, oai):
    openai_fake.queue_refusal("Não posso ajudar.")
    openai_fake.queue_incomplete()
    refusal = oai.responses.create(model="gpt-5.4-mini", input="x")
    assert refusal.output_text == "" and refusal.output[0].content[0].refusal == "Não posso ajudar."
    incomplete = oai.responses.create(model="gpt-5.4-mini", input="x")
    assert incomplete.status == "incomplete" and incomplete.incomplete_details.reason == "max_output_tokens"


def test_openai_sdk_retry_sees_success_after_a_500(openai_fake):
    client = OpenAI(api_key=openai_fake.api_key, base_url=openai_fake.v1_url, max_retries=2)
    openai_fake.fail_next(500)
    assert client.responses.create(model="gpt-5.4-mini", input="oi").output_text == "[fake] oi"
    assert len(openai_fake.requests_to("/v1/responses")) == 2


def test_openai_429_three_times_exhausts_retries_quickly(openai_fake):
    client = OpenAI(api_key=openai_fake.api_key, base_url=openai_fake.v1_url, max_retries=2)
    openai_fake.fail_next(429, times=3)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.create(model="gpt-5.4-mini", input="oi")
    assert time.monotonic() - started < 1.0
    assert err.value.response.headers["retry-after"] == "0"
    assert len(openai_fake.requests) == 3


def test_openai_timeout_and_malformed_json(openai_fake, oai):
    openai_fake.fail_next(200, delay=0.5)
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.1).responses.create(model="gpt-5.4-mini", input="oi")
    openai_fake.fail_next(502, raw_body=b"<html>bad gateway")
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model="gpt-5.4-mini", input="oi")


def test_openai_embeddings_base64_default_matches_float(openai_fake, oai):
    texts = ["Horário de funcionamento da loja", "horário da loja", "receita de bolo"]
    default = oai.embeddings.create(model="text-embedding-3-small", input=texts)
    assert openai_fake.requests[-1].json["encoding_format"] == "base64"  # the SDK's default
    as_float = oai.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in default.data], dtype=np.float32)
    assert vectors.shape == (3, 1536)
    assert np.array_equal(vectors, np.array([d.embedding for d in as_float.data], dtype=np.float32))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]
    assert openai_fake.embedded_inputs == texts * 2
    small = oai.embeddings.create(model="text-embedding-3-large", input="oi", dimensions=256)
    assert len(small.data[0].embedding) == 256


@pytest.mark.nonconformant_ok  # sends what the real API refuses, on purpose
def test_openai_embeddings_limits(oai):
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="text-embedding-3-small", input=["x"] * 2049)
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="text-embedding-9", input="x")


def test_openai_transcription(openai_fake, oai):
    voice = audio_samples.speech_like_ogg(1.5)
    result = oai.audio.transcriptions.create(model="gpt-transcribe", file=("nota.wav", audio_samples.wav_pcm16(1.0),
                                                                             "audio/wav"), language="pt")
    assert result.text == "Olá, tudo bem?"
    openai_fake.transcription_for(lambda data: f"{len(data)} bytes")
    text = oai.audio.transcriptions.create(model="gpt-transcribe", file=("nota.ogg", voice, "audio/ogg"),
                                           prompt="Ana, pix", response_format="text")
    assert text.strip() == f"{len(voice)} bytes"
    recorded = openai_fake.requests[-1]
    assert recorded.form == {"model": "gpt-transcribe", "prompt": "Ana, pix", "response_format": "text"}
    assert recorded.files["file"] == ("nota.ogg", "audio/ogg", voice)


@pytest.mark.parametrize("filename, data, status", [
    ("nota.opus", b"OggS", 400),  # extension not accepted
    ("nota.ogg", audio_samples.big_blob(1000), 400),  # not decodable audio
    ("nota.ogg", audio_samples.big_blob(25 * 1024 * 1024 + 1), 413),
])
def test_openai_transcription_refusals(oai, filename, data, status):
    with pytest.raises(openai.APIStatusError) as err:
        oai.audio.transcriptions.create(model="gpt-transcribe", file=(filename, data, "audio/ogg"))
    assert err.value.status_code == status


# -- ElevenLabs -----------------------------------------------------------------------------------
def test_elevenlabs_convert_returns_real_ogg_opus(elevenlabs_fake, eleven):
    chunks = eleven.text_to_speech.convert(voice_id=DEFAULT_VOICE, text="Olá! Seu pedido saiu para entrega.",
                                           model_id="eleven_multilingual_v2", output_format="opus_48000_32")
    audio = b"".join(chunks)
    assert audio.startswith(b"OggS") and 1.5 < decoded_seconds(audio) < 2.6
    assert elevenlabs_fake.syntheses[0]["output_format"] == "opus_48000_32"
    assert elevenlabs_fake.requests[0].headers["xi-api-key"] == elevenlabs_fake.api_key


def test_elevenlabs_stream_mp3_and_pcm_lengths(eleven):
    mp3 = b"".join(eleven.text_to_speech.stream(voice_id=DEFAULT_VOICE, text="Oi"))  # default mp3_44100_128
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF
    pcm = b"".join(eleven.text_to_speech.convert(voice_id=DEFAULT_VOICE, text="x" * 50, output_format="pcm_16000"))
    assert len(pcm) == 3 * 16000 * 2  # 50 chars * 60 ms = 3 s of s16le


@pytest.mark.parametrize("kwargs, status, code", [
    ({"voice_id": "nope"}, 404, "voice_not_found"),
    ({"text": "a" * 10_001}, 400, "max_character_limit_exceeded"),
    ({"output_format": "flac_9"}, 422, None),
])
def test_elevenlabs_refusals(eleven, kwargs, status, code):
    args = {"voice_id": DEFAULT_VOICE, "text": "oi", "model_id": "eleven_multilingual_v2", **kwargs}
    with pytest.raises(ApiError) as err:
        b"".join(eleven.text_to_speech.convert(**args))
    assert err.value.status_code == status
    if code:
        assert err.value.body["detail"]["code"] == code


def test_elevenlabs_auth_quota_and_rate_limit(elevenlabs_fake):
    wrong = ElevenLabs(api_key="bad", base_url=elevenlabs_fake.base_url)
    with pytest.raises(ApiError) as err:
        b"".join(wrong.text_to_speech.convert(voice_id=DEFAULT_VOICE, text="oi"))
    assert err.value.status_code == 401 and err.value.body["detail"]["code"] == "invalid_api_key"
    client = ElevenLabs(api_key=elevenlabs_fake.api_key, base_url=elevenlabs_fake.base_url)
    elevenlabs_fake.quota_exceeded()
    with pytest.raises(ApiError) as err:
        b"".join(client.text_to_speech.convert(voice_id=DEFAULT_VOICE, text="oi"))
    assert err.value.status_code == 401 and err.value.body["detail"]["code"] == "quota_exceeded"
    elevenlabs_fake.fail_next(429)
    with pytest.raises(ApiError) as err:
        b"".join(client.text_to_speech.convert(voice_id=DEFAULT_VOICE, text="oi"))
    assert err.value.body["detail"]["code"] == "too_many_concurrent_requests"
    assert b"".join(client.text_to_speech.convert(voice_id=DEFAULT_VOICE, text="oi"))
    missing_text = requests.post(f"{elevenlabs_fake.base_url}/v1/text-to-speech/{DEFAULT_VOICE}", json={},
                                 headers={"xi-api-key": elevenlabs_fake.api_key}, timeout=5)
    assert missing_text.status_code == 422 and missing_text.json()["detail"][0]["loc"] == ["body", "text"]


# -- audio samples ---------------------------------------------------------------------------------
def test_audio_samples_are_real_audio():
    voice = audio_samples.speech_like_ogg(3.0)
    assert voice.startswith(b"OggS") and b"OpusHead" in voice[:200]
    assert 2.9 < decoded_seconds(voice) < 3.1
    assert audio_samples.silent_ogg(1.0).startswith(b"OggS")
    assert audio_samples.wav_pcm16(1.0, 8000)[:4] == b"RIFF"
    assert len(audio_samples.truncated(voice, 0.5)) == len(voice) // 2
    assert audio_samples.speech_like_ogg(3.0) is voice  # cached
