"""The Realtime emulator refuses what the service refuses (tests/fakes/realtime_fake.py), driven by the real SDK.

These guard the emulator itself: a check that silently passes would let a broken gateway
through the gateway tests.
"""
from __future__ import annotations

import base64
import threading

import pytest
from openai import OpenAI

from tests.fakes.realtime_fake import RealtimeFake, tone_pcm16

SESSION = {"type": "realtime", "instructions": "x", "output_modalities": ["audio"],
           "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                               "turn_detection": {"type": "server_vad", "create_response": False}},
                     "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}}}


def events_until(conn, *types, limit: float = 5.0):
    """Events up to the first of ``types``; a watchdog closes the connection if it never comes
    (the sync SDK's iterator has no timeout), so a missing event fails instead of hanging."""
    seen = []
    watchdog = threading.Timer(limit, conn.close)
    watchdog.start()
    try:
        for event in conn:
            seen.append(event)
            if event.type in types:
                return seen
    finally:
        watchdog.cancel()
    return seen


def connect(fake: RealtimeFake):
    client = OpenAI(api_key=fake.api_key, websocket_base_url=fake.ws_base_url, max_retries=0)
    return client.realtime.connect(model="gpt-realtime-2")


def audio_b64(seconds: float) -> str:
    return base64.b64encode(tone_pcm16(seconds)).decode("ascii")


def first_error(conn):
    seen = events_until(conn, "error")
    assert seen and seen[-1].type == "error", [e.type for e in seen]
    return seen[-1].error


def test_anything_before_session_update_is_refused(realtime_fake):
    with connect(realtime_fake) as conn:
        conn.input_audio_buffer.append(audio=audio_b64(0.5))
        assert first_error(conn).code == "emulator_order"


@pytest.mark.parametrize("change, param", [
    ({"type": "conversation"}, "session.type"),
    ({"output_modalities": ["audio", "text"]}, "session.output_modalities"),
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "session.audio.input.format"),
    ({"audio": {"output": {"voice": "endrigo"}}}, "session.audio.output.voice"),
    ({"temperature": 0.8}, "session.temperature"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}]},
     "session.tools[0].strict"),
])
def test_bad_session_shapes_are_refused(realtime_fake, change, param):
    session = {**SESSION, **change}
    with connect(realtime_fake) as conn:
        conn.session.update(session=session)
        assert first_error(conn).param == param
    assert realtime_fake.sessions == []


def test_commit_of_less_than_100_ms_is_refused(realtime_fake):
    with connect(realtime_fake) as conn:
        conn.session.update(session=SESSION)
        conn.input_audio_buffer.append(audio=audio_b64(0.05))
        conn.input_audio_buffer.commit()
        assert first_error(conn).code == "input_audio_buffer_commit_empty"


def test_response_create_without_input_is_refused(realtime_fake):
    with connect(realtime_fake) as conn:
        conn.session.update(session=SESSION)
        conn.response.create()
        assert first_error(conn).code == "emulator_order"


def test_server_vad_answers_by_itself_and_a_second_response_is_refused(realtime_fake):
    session = {**SESSION, "audio": {**SESSION["audio"], "input": {**SESSION["audio"]["input"],
                                                                  "turn_detection": {"type": "server_vad"}}}}
    with connect(realtime_fake) as conn:
        conn.session.update(session=session)
        conn.input_audio_buffer.append(audio=audio_b64(0.5))
        conn.input_audio_buffer.commit()
        conn.response.create()
        seen = events_until(conn, "error")
    assert [e.type for e in seen].count("response.done") == 1
    assert seen[-1].error.code == "conversation_already_has_active_response"


def test_function_output_for_an_unknown_call_is_refused(realtime_fake):
    with connect(realtime_fake) as conn:
        conn.session.update(session=SESSION)
        conn.conversation.item.create(item={"type": "function_call_output", "call_id": "call_nope", "output": "{}"})
        assert first_error(conn).param == "item.call_id"


def test_answer_is_pcm16_of_the_chosen_length_in_several_deltas(realtime_fake):
    realtime_fake.answer_seconds, realtime_fake.audio_deltas = 0.9, 3
    with connect(realtime_fake) as conn:
        conn.session.update(session=SESSION)
        conn.input_audio_buffer.append(audio=audio_b64(0.7))
        conn.input_audio_buffer.commit()
        conn.response.create()
        seen = events_until(conn, "response.done", "error")
    deltas = [base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta"]
    assert len(deltas) == 3 and all(len(d) % 2 == 0 for d in deltas)
    assert sum(map(len, deltas)) == int(0.9 * 24000) * 2
    assert seen[-1].type == "response.done" and seen[-1].response.status == "completed"
    assert realtime_fake.input_audio_seconds == pytest.approx(0.7)


def test_unknown_fault_name_is_rejected(realtime_fake):
    with pytest.raises(ValueError):
        realtime_fake.fault = "explode"
