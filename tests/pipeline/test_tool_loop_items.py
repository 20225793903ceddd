"""The tool loop sends back only the output items it understands (app/pipeline/answer.py):
function calls and our outputs for them, assistant messages, and reasoning items when the
request included their encrypted content. Anything else - a built-in tool's call, a type the
API adds later - is dropped with one warning per type per turn. Proven through the inbox, the
real SDK and the OpenAI emulator, which refuses unknown input item types as the API does (and
every request is checked against the official spec at teardown)."""
from __future__ import annotations

import logging

import pytest

from tests.conftest import post_signed, wait_for
from tests.fakes.openai_fake import reasoning_item, web_search_call_item

PATH = "/webhook/whatsapp"
FUTURE = {"type": "holo_projection_call", "status": "completed", "scene": {"frames": 3}}


@pytest.fixture
def online(online_app):
    """Online apps whose SDK does not retry: a refused request shows at once."""
    return lambda **overrides: online_app(**{"openai_max_retries": 0, **overrides})


def answered(app, twilio_fake, body: str) -> list[str]:
    form = twilio_fake.inbound_form(body=body)
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    return wait_for(lambda: [m["body"] for m in twilio_fake.sent], timeout=15)


def inputs(openai_fake) -> list[list[dict]]:
    return [r.json["input"] for r in openai_fake.requests_to("/v1/responses")]


def dropped_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "not understood" in r.getMessage()]


def test_unknown_and_built_in_tool_items_are_not_sent_back(online, openai_fake, twilio_fake, caplog):
    app = online()  # gpt-5.4-mini: the request includes reasoning.encrypted_content
    openai_fake.inject_output([web_search_call_item(), FUTURE])
    openai_fake.queue_output([reasoning_item("pensando"),
                              {"type": "function_call", "name": "get_current_datetime", "arguments": {},
                               "call_id": "call_time"}])
    openai_fake.queue_text("Hoje é terça-feira.")
    with caplog.at_level(logging.WARNING):
        assert answered(app, twilio_fake, "Que dia é hoje?") == ["Hoje é terça-feira."]

    first, second = inputs(openai_fake)
    replayed = second[len(first):]
    assert [item.get("type") for item in replayed] == ["reasoning", "function_call", "function_call_output"]
    assert replayed[0]["encrypted_content"].startswith("gAAAAA")
    assert replayed[1]["call_id"] == replayed[2]["call_id"] == "call_time"
    warnings = dropped_warnings(caplog)
    assert len(warnings) == 2
    assert any("'web_search_call'" in w for w in warnings) and any("'holo_projection_call'" in w for w in warnings)


def test_one_warning_per_type_per_turn(online, openai_fake, twilio_fake, caplog):
    app = online()
    openai_fake.inject_output([FUTURE, dict(FUTURE)], responses=2)
    for n in (1, 2):
        openai_fake.queue_function_call("get_current_datetime", {}, call_id=f"call_{n}")
    openai_fake.queue_text("Pronto.")
    with caplog.at_level(logging.WARNING):
        assert answered(app, twilio_fake, "Oi") == ["Pronto."]
    assert len(inputs(openai_fake)) == 3
    assert all(item.get("type") != FUTURE["type"] for body in inputs(openai_fake) for item in body)
    assert len(dropped_warnings(caplog)) == 1


def test_reasoning_items_go_back_only_when_the_request_included_them(online, openai_fake, twilio_fake):
    openai_fake.set_model("gpt-4.1")  # a non-reasoning model the catalog serves
    app = online(openai_model="gpt-4.1")  # no include: the emulator sends no encrypted content
    openai_fake.queue_output([reasoning_item(), {"type": "function_call", "name": "get_current_datetime",
                                                 "arguments": {}, "call_id": "call_time"}])
    openai_fake.queue_text("Agora são 10h.")
    assert answered(app, twilio_fake, "Que horas são?") == ["Agora são 10h."]
    first, second = inputs(openai_fake)
    replayed = second[len(first):]
    assert [item.get("type") for item in replayed] == ["function_call", "function_call_output"]
    assert "id" not in replayed[0]  # it pointed at the reasoning item that stayed behind


def test_message_items_keep_only_the_parts_the_api_takes_back(online, openai_fake, twilio_fake, caplog):
    app = online()
    openai_fake.queue_output([
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Vou ver a data.", "annotations": [], "logprobs": []},
                     {"type": "output_sticker", "sticker": "thumbs-up"}]},
        {"type": "message", "id": "msg_2", "status": "completed", "role": "assistant",
         "content": [{"type": "output_sticker", "sticker": "wave"}]},
        {"type": "function_call", "name": "get_current_datetime", "arguments": {}, "call_id": "call_time"}])
    openai_fake.queue_text("É dia 1º.")
    with caplog.at_level(logging.WARNING):
        assert answered(app, twilio_fake, "Que dia é hoje?") == ["É dia 1º."]
    first, second = inputs(openai_fake)
    replayed = second[len(first):]
    assert [item.get("type") for item in replayed] == ["message", "function_call", "function_call_output"]
    assert [part["type"] for part in replayed[0]["content"]] == ["output_text"]
    assert len(dropped_warnings(caplog)) == 1
