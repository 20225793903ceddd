"""RealtimeGateway through the real openai SDK against the Realtime emulator (tests/fakes/realtime_fake.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.clients.openai_realtime import RealtimeError, RealtimeGateway, RealtimeResult
from tests.fakes.audio_samples import pcm_s16le
from tests.fakes.realtime_fake import closed_port_url

MODEL = "gpt-realtime-2"
PERSONA = "Você é o Endrigo. Responda em português do Brasil."
TOOLS = [{"type": "function", "name": "get_price", "description": "Preço de um produto.", "strict": True,
          "parameters": {"type": "object", "properties": {"product": {"type": "string"}},
                         "required": ["product"], "additionalProperties": False}}]
HISTORY = [{"role": "user", "content": "Oi"}, {"role": "assistant", "content": "Olá! Como posso ajudar?"}]


def gateway(fake, *, key=None, model=MODEL, url=None, timeout=5.0, **kwargs) -> RealtimeGateway:
    return RealtimeGateway(key or fake.api_key, model=model, websocket_base_url=url or fake.ws_base_url,
                           timeout=timeout, **kwargs)


def run(gw: RealtimeGateway, seconds: float = 2.0, **kwargs) -> RealtimeResult:
    params = {"instructions": PERSONA, "history": HISTORY, "tools": [], "pcm16_24k": pcm_s16le(seconds, 24000),
              "voice": "marin", "output": "audio"}
    params.update(kwargs)
    return gw.run(**params)


def test_audio_answer_with_transcripts(realtime_fake):
    realtime_fake.answer_seconds = 1.5
    realtime_fake.audio_deltas = 5

    result = run(gateway(realtime_fake), seconds=2.0, chunk_ms=300)

    assert result.audio_seconds == pytest.approx(1.5, abs=0.001)
    samples = np.frombuffer(result.audio, dtype="<i2")
    assert np.abs(samples).max() > 5000  # the tone itself, not padding
    assert result.output_transcript == realtime_fake.output_text
    assert result.input_transcript == realtime_fake.input_transcript
    assert result.usage["total_tokens"] == 250 and result.usage["output_token_details"]["audio_tokens"] == 50
    assert result.tool_calls == []
    assert {"connect", "first_audio", "total"} <= set(result.timings)
    # What went over the wire: the URL, the key, the session, the audio, the order.
    handshake = realtime_fake.handshakes[-1]
    assert handshake["path"] == "/v1/realtime" and handshake["query"] == {"model": MODEL}
    assert handshake["headers"]["authorization"] == f"Bearer {realtime_fake.api_key}"
    assert realtime_fake.input_audio_seconds == pytest.approx(2.0, abs=0.001)
    assert len(realtime_fake.events_of("input_audio_buffer.append")) == 7  # 2 s in 300 ms chunks
    session = realtime_fake.sessions[-1]
    assert session["instructions"] == PERSONA and session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}
    types = [e["type"] for e in realtime_fake.events]
    assert types[0] == "session.update"
    assert types[1:3] == ["conversation.item.create"] * 2
    assert types[-2:] == ["input_audio_buffer.commit", "response.create"]
    items = [e["item"] for e in realtime_fake.events_of("conversation.item.create")]
    assert items[0] == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Oi"}]}
    assert items[1]["role"] == "assistant" and items[1]["content"][0] == {"type": "output_text",
                                                                          "text": "Olá! Como posso ajudar?"}
    assert realtime_fake.errors_sent == []


def test_input_transcript_that_comes_after_the_answer_is_waited_for(realtime_fake):
    realtime_fake.transcript_after_response = True

    result = run(gateway(realtime_fake))

    assert result.input_transcript == realtime_fake.input_transcript
    assert result.audio_seconds > 0


def test_without_input_transcription_the_answer_still_comes(realtime_fake):
    result = run(gateway(realtime_fake, transcription_model=None))

    assert result.input_transcript is None and result.audio_seconds > 0
    assert "transcription" not in realtime_fake.sessions[-1]["audio"]["input"]


def test_text_mode(realtime_fake):
    result = run(gateway(realtime_fake), output="text")

    assert result.audio == b""
    assert result.output_transcript == realtime_fake.output_text
    assert realtime_fake.sessions[-1]["output_modalities"] == ["text"]


def test_tool_call_round_trip(realtime_fake):
    realtime_fake.tool_calls = [{"name": "get_price", "arguments": {"product": "mentoria"}}]
    seen = []

    def on_tool_call(name, arguments):
        seen.append((name, arguments))
        return json.dumps({"price": "R$ 500"})

    result = run(gateway(realtime_fake), tools=TOOLS, on_tool_call=on_tool_call)

    assert seen == [("get_price", {"product": "mentoria"})]
    assert [o["output"] for o in realtime_fake.tool_outputs] == ['{"price": "R$ 500"}']
    assert result.tool_calls[0]["name"] == "get_price" and result.tool_calls[0]["round"] == 1
    assert result.tool_calls[0]["call_id"] == realtime_fake.tool_outputs[0]["call_id"]
    assert result.audio_seconds > 0 and result.output_transcript == realtime_fake.output_text
    assert result.usage["total_tokens"] == 500  # both responses counted
    # Realtime function tools take no "strict" (the emulator refuses unknown keys).
    assert realtime_fake.sessions[-1]["tools"][0] == {k: v for k, v in TOOLS[0].items() if k != "strict"}
    assert len(realtime_fake.events_of("response.create")) == 2


def test_tool_rounds_are_bounded(realtime_fake):
    realtime_fake.tool_calls = [{"name": "get_price", "arguments": {"product": "x"}}] * 10

    result = run(gateway(realtime_fake, max_tool_rounds=2), tools=TOOLS, on_tool_call=lambda name, args: "{}")

    assert len(result.tool_calls) == 2 and result.audio_seconds > 0
    creates = realtime_fake.events_of("response.create")
    assert [c.get("response", {}).get("tool_choice") for c in creates] == [None, None, "none"]


def test_a_failing_tool_becomes_an_error_output(realtime_fake):
    realtime_fake.tool_calls = [{"name": "get_price", "arguments": {"product": "x"}}]

    def broken(name, arguments):
        raise KeyError("boom")

    result = run(gateway(realtime_fake), tools=TOOLS, on_tool_call=broken)

    assert json.loads(realtime_fake.tool_outputs[0]["output"]) == {"error": "get_price failed: KeyError"}
    assert result.audio_seconds > 0


def test_wrong_key_is_auth(realtime_fake):
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake, key="sk-wrong-key-000000"))
    assert caught.value.kind == "auth"
    assert "sk-wrong" not in str(caught.value)


def test_server_not_listening_is_connect(realtime_fake):
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake, url=closed_port_url()))
    assert caught.value.kind == "connect"


def test_handshake_500_is_connect(realtime_fake):
    realtime_fake.fault = "handshake_500"
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake))
    assert caught.value.kind == "connect" and "500" in caught.value.reason


def test_unknown_model_is_an_error_event(realtime_fake):
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake, model="gpt-realtime-9"))
    assert caught.value.kind == "error_event" and "model_not_found" in caught.value.reason


def test_error_event(realtime_fake):
    realtime_fake.fault = "error_event"
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake))
    assert caught.value.kind == "error_event" and "server_error" in caught.value.reason


def test_an_invalid_key_error_event_is_auth(realtime_fake):
    realtime_fake.fault = "error_event"
    realtime_fake.error_payload = {"type": "invalid_request_error", "code": "invalid_api_key",
                                   "message": "Incorrect API key provided."}
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake))
    assert caught.value.kind == "auth"


def test_error_then_close_while_sending_is_an_error_event(realtime_fake):
    realtime_fake.fault = "error_and_close"
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake), seconds=2.0, chunk_ms=100)
    assert caught.value.kind == "error_event" and "insufficient_quota" in caught.value.reason


def test_stall_ends_as_timeout(realtime_fake):
    realtime_fake.fault = "stall"
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake, timeout=0.5))
    assert caught.value.kind == "timeout"


def test_close_mid_response(realtime_fake):
    realtime_fake.fault = "close_mid_response"
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake))
    assert caught.value.kind == "closed"
    assert realtime_fake.events_of("response.create")  # it did get as far as asking


def test_answer_without_audio_is_empty_audio(realtime_fake):
    realtime_fake.answer_seconds = 0
    with pytest.raises(RealtimeError) as caught:
        run(gateway(realtime_fake))
    assert caught.value.kind == "empty_audio"


def test_too_little_audio_is_refused_before_connecting(realtime_fake):
    with pytest.raises(ValueError):
        run(gateway(realtime_fake), pcm16_24k=b"\0\0" * 100)
    assert realtime_fake.handshakes == []


def test_voice_note_in_voice_note_out(realtime_fake, tmp_path):
    """The three pieces together: OGG note -> PCM 24 kHz -> trimmed -> session -> OGG/Opus answer."""
    from app.audio.pcm import pcm_to_ogg_opus, to_pcm16_24k, trim_silence
    from tests.fakes.audio_samples import SPEECH_EXPR, render

    note = tmp_path / "note.ogg"
    note.write_bytes(render(f"if(between(t,1,3),{SPEECH_EXPR},0)", 4.0, "ogg_opus", 48000, "24k"))
    trimmed = trim_silence(to_pcm16_24k(note))

    result = run(gateway(realtime_fake), pcm16_24k=trimmed)
    answer = pcm_to_ogg_opus(result.audio)

    assert 2.0 < realtime_fake.input_audio_seconds < 2.6  # the 2 s of speech and its padding, not 4 s
    assert answer.startswith(b"OggS") and result.audio_seconds == pytest.approx(realtime_fake.answer_seconds)
