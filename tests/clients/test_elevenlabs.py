"""The ElevenLabs gateway (app/clients/elevenlabs_client.py) through the real SDK against the emulator."""
from __future__ import annotations

import pytest

from app.audio.formats import sniff_audio_type
from app.clients.elevenlabs_client import MODEL_CHAR_LIMITS, ElevenLabsGateway, TTSError, classify_api_error
from app.config import Settings


@pytest.fixture
def make_gateway(elevenlabs_fake):
    def factory(**overrides) -> ElevenLabsGateway:
        values = dict(elevenlabs_api_key=elevenlabs_fake.api_key, elevenlabs_base_url=elevenlabs_fake.base_url)
        values.update(overrides)
        return ElevenLabsGateway(Settings(**values))

    return factory


def test_synthesize_returns_ogg_opus_in_the_cloned_voice(make_gateway, elevenlabs_fake):
    speech = make_gateway().synthesize("Oi! Aqui é o Endrigo, tudo bem com você?")

    assert speech.data.startswith(b"OggS") and sniff_audio_type(speech.data[:96]) == "opus"
    assert (speech.content_type, speech.format) == ("audio/ogg", "opus_48000_32")
    request = elevenlabs_fake.requests[-1]
    assert request.path == "/v1/text-to-speech/SuM1a4mUYXCmWfwWYCx0"
    assert request.headers["xi-api-key"] == elevenlabs_fake.api_key
    assert request.query == {"output_format": "opus_48000_32"}
    assert request.json["model_id"] == "eleven_multilingual_v2"
    assert request.json["apply_text_normalization"] == "auto"
    assert request.json["voice_settings"]["similarity_boost"] == 0.75
    assert "language_code" not in request.json  # not supported by multilingual_v2


def test_language_code_is_sent_to_models_that_take_it(make_gateway, elevenlabs_fake):
    speech = make_gateway(elevenlabs_model_id="eleven_flash_v2_5").synthesize("Olá", output_format="mp3_44100_64")
    assert speech.content_type == "audio/mpeg" and sniff_audio_type(speech.data[:16]) == "mp3"
    assert elevenlabs_fake.requests[-1].json["language_code"] == "pt"
    assert elevenlabs_fake.syntheses[-1]["model_id"] == "eleven_flash_v2_5"


def test_unavailable_without_a_key(elevenlabs_fake):
    gateway = ElevenLabsGateway(Settings(elevenlabs_base_url=elevenlabs_fake.base_url))
    assert not gateway.available
    with pytest.raises(TTSError) as err:
        gateway.synthesize("Olá")
    assert err.value.kind == "auth"
    assert elevenlabs_fake.requests == []


def test_quota_exceeded_is_a_401_classified_as_quota(make_gateway, elevenlabs_fake):
    elevenlabs_fake.quota_exceeded()
    with pytest.raises(TTSError) as err:
        make_gateway().synthesize("Olá")
    assert (err.value.kind, err.value.status, err.value.retryable) == ("quota", 401, False)
    assert "quota" in err.value.reason


def test_invalid_key_is_auth_and_the_key_is_not_in_the_reason(make_gateway, elevenlabs_fake):
    with pytest.raises(TTSError) as err:
        make_gateway(elevenlabs_api_key="sk_wrong_key_0123456789").synthesize("Olá")
    assert err.value.kind == "auth" and not err.value.retryable
    assert "sk_wrong_key_0123456789" not in str(err.value) and elevenlabs_fake.api_key not in str(err.value)


@pytest.mark.parametrize("status, kind", [(429, "rate_limited"), (500, "server"), (503, "server"),
                                          (400, "bad_request"), (422, "bad_request")])
def test_http_errors_are_classified(make_gateway, elevenlabs_fake, status, kind):
    elevenlabs_fake.fail_next(status)
    with pytest.raises(TTSError) as err:
        make_gateway().synthesize("Olá")
    assert (err.value.kind, err.value.status) == (kind, status)
    assert err.value.retryable == (kind in ("rate_limited", "server"))
    assert len(elevenlabs_fake.requests) == 1  # the SDK does not retry behind the pipeline's back


def test_rate_limit_is_retryable_and_its_reason_names_the_status(make_gateway, elevenlabs_fake):
    elevenlabs_fake.fail_next(429, headers={"Retry-After": "3"})
    with pytest.raises(TTSError) as err:
        make_gateway().synthesize("Olá")
    assert (err.value.kind, err.value.status, err.value.retryable) == ("rate_limited", 429, True)
    assert err.value.reason.startswith("HTTP 429")


def test_unknown_voice_is_a_bad_request(make_gateway):
    with pytest.raises(TTSError) as err:
        make_gateway(elevenlabs_voice_id="nope").synthesize("Olá")
    assert err.value.kind == "bad_request" and "voice_not_found" in err.value.reason


def test_timeout(make_gateway, elevenlabs_fake):
    elevenlabs_fake.fail_next(200, delay=1.5, raw_body=b"OggS")
    with pytest.raises(TTSError) as err:
        make_gateway().synthesize("Olá", timeout=0.4)
    assert err.value.kind == "timeout" and err.value.retryable


def test_bytes_that_are_not_the_requested_audio_are_refused(make_gateway, elevenlabs_fake):
    elevenlabs_fake.fail_next(200, raw_body=b'{"audio": "base64..."}')
    with pytest.raises(TTSError) as err:
        make_gateway().synthesize("Olá")
    assert err.value.kind == "bad_audio"
    elevenlabs_fake.fail_next(200, raw_body=b"OggS but asked for mp3")
    with pytest.raises(TTSError) as err:
        make_gateway().synthesize("Olá", output_format="mp3_44100_64")
    assert err.value.kind == "bad_audio"


def test_text_over_the_model_limit_is_refused_before_any_request(make_gateway, elevenlabs_fake):
    with pytest.raises(TTSError) as err:
        make_gateway().synthesize("a" * (MODEL_CHAR_LIMITS["eleven_multilingual_v2"] + 1))
    assert err.value.kind == "bad_request"
    with pytest.raises(TTSError):
        make_gateway().synthesize("   ")
    assert elevenlabs_fake.requests == []


def test_classify_handles_every_body_shape():
    assert classify_api_error(401, {"detail": {"status": "quota_exceeded", "message": "x"}}).kind == "quota"
    assert classify_api_error(401, {"detail": {"code": "invalid_api_key"}}).kind == "auth"
    assert classify_api_error(422, {"detail": [{"loc": ["body", "text"], "msg": "Field required"}]}).reason \
        == "HTTP 422 - body.text: Field required"
    assert classify_api_error(502, "<html>Bad gateway</html>").kind == "server"
