"""app.channels.twilio.media against the Twilio emulator: allow-lists, redirects, credentials, limits, cleanup."""
from __future__ import annotations

import base64
import logging

import pytest
import requests

from app.channels.twilio import media as media_download
from app.channels.twilio.media import MediaDownloadError, MediaRefused, MediaTooLarge, download_media
from app.config import Settings
from tests.conftest import EMULATOR_ENV
from tests.fakes import audio_samples as samples

PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
MB = 1024 * 1024


def _settings(fake, **overrides) -> Settings:
    values = dict(twilio_account_sid=fake.account_sid, twilio_auth_token=fake.auth_token,
                  media_allowed_hosts=("127.0.0.1",))
    values.update(overrides)
    return Settings.from_env(env=EMULATOR_ENV, **values)


def _on_localhost(url: str) -> str:
    """The same emulator under another host name, so that API and CDN hosts differ."""
    return url.replace("://127.0.0.1:", "://localhost:", 1)


def _expected_auth(fake) -> str:
    return "Basic " + base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()


def _no_content_length(response, *args, **kwargs):
    """Response hook: hide Content-Length, as a chunked CDN answer would."""
    response.headers.pop("Content-Length", None)


# ---- the happy path ---------------------------------------------------------------------------

def test_downloads_a_voice_note_with_auth_then_cdn_without(twilio_fake, tmp_path):
    note = samples.speech_like_ogg(2.0)
    url = twilio_fake.add_media(note, "audio/ogg")

    media = download_media(url, _settings(twilio_fake), tmp_path)

    assert media.path.read_bytes() == note
    assert media.path.parent == tmp_path and media.path.suffix == ".ogg"
    assert (media.content_type, media.sniffed_type, media.audio_kind, media.size) == \
        ("audio/ogg", "audio/ogg", "opus", len(note))
    assert media.is_audio and not media.header_mismatch
    api_request, cdn_request = twilio_fake.requests
    assert "/Media/ME" in api_request.path and api_request.headers.get("Authorization") == _expected_auth(twilio_fake)
    assert cdn_request.path.startswith("/cdn/") and "Authorization" not in cdn_request.headers
    assert [p.name for p in tmp_path.iterdir()] == [media.path.name]


def test_auth_is_not_forwarded_to_a_different_cdn_host(twilio_fake, tmp_path):
    url = _on_localhost(twilio_fake.add_media(samples.mp3(1.0), "audio/mpeg"))
    settings = _settings(twilio_fake, media_allowed_hosts=("localhost", "127.0.0.1"))

    media = download_media(url, settings, tmp_path)

    assert media.audio_kind == "mp3" and media.path.suffix == ".mp3"
    api_request, cdn_request = twilio_fake.requests
    assert api_request.headers["Host"].startswith("localhost:")
    assert api_request.headers.get("Authorization") == _expected_auth(twilio_fake)
    assert cdn_request.headers["Host"].startswith("127.0.0.1:")
    assert "Authorization" not in cdn_request.headers


def test_credentials_on_a_callers_session_do_not_leak_to_the_cdn(twilio_fake, tmp_path):
    session = requests.Session()
    session.auth = (twilio_fake.account_sid, twilio_fake.auth_token)
    session.headers["Authorization"] = _expected_auth(twilio_fake)
    url = twilio_fake.add_media(samples.mp3(1.0), "audio/mpeg")

    download_media(url, _settings(twilio_fake), tmp_path, session=session)

    api_request, cdn_request = twilio_fake.requests
    assert api_request.headers.get("Authorization") == _expected_auth(twilio_fake)
    assert "Authorization" not in cdn_request.headers


def test_header_that_lies_is_detected(twilio_fake, tmp_path):
    url = twilio_fake.add_media(PNG_BYTES, "audio/ogg")

    media = download_media(url, _settings(twilio_fake), tmp_path)

    assert media.content_type == "audio/ogg"
    assert media.sniffed_type == "image/png"
    assert not media.is_audio
    assert media.header_mismatch
    assert media.path.suffix == ".png"  # named after what it is, not what it claims


def test_audio_under_a_generic_content_type_is_recognised(twilio_fake, tmp_path):
    url = twilio_fake.add_media(samples.speech_like_ogg(1.0), "application/octet-stream")
    media = download_media(url, _settings(twilio_fake), tmp_path)
    assert media.is_audio and media.audio_kind == "opus" and not media.header_mismatch


# ---- refusals: no request at all --------------------------------------------------------------------

def test_host_not_allowed_is_refused_without_a_request(twilio_fake, tmp_path):
    url = twilio_fake.add_media(b"OggS", "audio/ogg")
    with pytest.raises(MediaRefused, match="not in MEDIA_ALLOWED_HOSTS"):
        download_media(url, _settings(twilio_fake, media_allowed_hosts=("api.twilio.com",)), tmp_path)
    assert twilio_fake.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", [
    "http://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",  # plain http
    "ftp://api.twilio.com/x",
    "https://user:pass@api.twilio.com/x",  # credentials in the URL
    "https://api.twilio.com.evil.example/x",  # suffix trick
    "https://evil.example/?https://api.twilio.com/",
    "not a url",
])
def test_bad_urls_are_refused(url, tmp_path):
    with pytest.raises(MediaRefused):
        download_media(url, Settings(twilio_account_sid="AC1", twilio_auth_token="t" * 32), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_allowed_host_resolving_to_a_private_address_is_refused(twilio_fake, tmp_path, host):
    url = twilio_fake.add_media(b"OggS", "audio/ogg").replace("http://127.0.0.1:", f"https://{host}:", 1)
    settings = _settings(twilio_fake, media_allowed_hosts=(host,), media_allow_private_hosts=False)
    with pytest.raises(MediaRefused, match="non-public address"):
        download_media(url, settings, tmp_path)
    assert twilio_fake.requests == []


def test_http_is_refused_unless_private_hosts_are_allowed(twilio_fake, tmp_path):
    url = twilio_fake.add_media(b"OggS", "audio/ogg")
    with pytest.raises(MediaRefused, match="scheme http"):
        download_media(url, _settings(twilio_fake, media_allow_private_hosts=False), tmp_path)
    assert twilio_fake.requests == []


def test_media_allow_private_hosts_defaults_to_refusing_loopback(twilio_fake, tmp_path):
    url = twilio_fake.add_media(samples.mp3(1.0), "audio/mpeg")
    for env in ({}, {"MEDIA_ALLOW_PRIVATE_HOSTS": "false"}):
        settings = Settings.from_env(env=env, twilio_account_sid=twilio_fake.account_sid,
                                     twilio_auth_token=twilio_fake.auth_token, media_allowed_hosts=("127.0.0.1",))
        assert settings.media_allow_private_hosts is False
        with pytest.raises(MediaRefused, match="scheme http"):
            download_media(url, settings, tmp_path)
        with pytest.raises(MediaRefused, match="non-public address"):
            download_media(url.replace("http://", "https://", 1), settings, tmp_path)
    assert twilio_fake.requests == []


def test_media_allow_private_hosts_from_the_environment_reaches_the_emulator_over_http(twilio_fake, tmp_path):
    note = samples.speech_like_ogg(1.0)
    url = twilio_fake.add_media(note, "audio/ogg")
    assert url.startswith("http://127.0.0.1:")
    settings = Settings.from_env(env={"MEDIA_ALLOW_PRIVATE_HOSTS": "true", "MEDIA_ALLOWED_HOSTS": "127.0.0.1",
                                      "TWILIO_ACCOUNT_SID": twilio_fake.account_sid,
                                      "TWILIO_AUTH_TOKEN": twilio_fake.auth_token})
    media = download_media(url, settings, tmp_path)
    assert media.path.read_bytes() == note
    assert [r.path.startswith("/cdn/") for r in twilio_fake.requests] == [False, True]


def test_media_allow_private_hosts_warns_at_every_start(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="app"):
        make_app(start_workers=False)
    assert sum("MEDIA_ALLOW_PRIVATE_HOSTS=true" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app"):
        make_app(start_workers=False, media_allow_private_hosts=False)
    assert "MEDIA_ALLOW_PRIVATE_HOSTS" not in caplog.text


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("10.0.0.1", False), ("172.16.5.4", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("::1", False), ("fe80::1", False),
    ("::ffff:127.0.0.1", False), ("0.0.0.0", False), ("100.64.0.1", False), ("fc00::1", False),
])
def test_address_classification(address, public):
    assert media_download._is_public_address(address) is public


# ---- redirects ----------------------------------------------------------------------------------

def test_redirect_to_a_host_not_allowed_is_refused_and_gets_no_credentials(twilio_fake, tmp_path):
    url = _on_localhost(twilio_fake.add_media(samples.speech_like_ogg(1.0), "audio/ogg"))
    settings = _settings(twilio_fake, media_allowed_hosts=("localhost",))  # the CDN host 127.0.0.1 is not allowed

    with pytest.raises(MediaRefused, match="127.0.0.1 is not in MEDIA_ALLOWED_HOSTS"):
        download_media(url, settings, tmp_path)

    assert len(twilio_fake.requests) == 1  # the API answered 307; the CDN was never contacted
    assert twilio_fake.requests_to("/cdn/") == []
    assert list(tmp_path.iterdir()) == []


def test_redirect_to_an_outside_host_is_refused(twilio_fake, tmp_path):
    url = twilio_fake.add_media(b"OggS", "audio/ogg")
    twilio_fake.fail_next(302, headers={"Location": "https://attacker.example/steal"}, body=b"")
    with pytest.raises(MediaRefused, match="attacker.example"):
        download_media(url, _settings(twilio_fake), tmp_path)
    assert len(twilio_fake.requests) == 1


def test_too_many_redirects_are_refused(twilio_fake, tmp_path):
    url = twilio_fake.add_media(b"OggS", "audio/ogg")
    twilio_fake.fail_next(307, headers={"Location": url}, body=b"", times=10)
    with pytest.raises(MediaRefused, match="redirects"):
        download_media(url, _settings(twilio_fake), tmp_path)
    assert len(twilio_fake.requests) == media_download.MAX_REDIRECTS + 1
    # Only the first request carried credentials, even though every hop was the same URL.
    assert [("Authorization" in r.headers) for r in twilio_fake.requests] == [True] + [False] * 5
    assert list(tmp_path.iterdir()) == []


# ---- size limits and failures: temporary files removed -------------------------------------------------

def test_twenty_megabytes_is_too_large_while_streaming(twilio_fake, tmp_path):
    url = twilio_fake.add_media(samples.big_blob(20 * MB), "audio/ogg")
    session = requests.Session()
    session.hooks["response"].append(_no_content_length)  # only the streaming check can catch it

    with pytest.raises(MediaTooLarge, match="^media exceeds"):
        download_media(url, _settings(twilio_fake), tmp_path, session=session)

    assert list(tmp_path.iterdir()) == []


def test_declared_content_length_over_the_limit_is_refused_up_front(twilio_fake, tmp_path):
    url = twilio_fake.add_media(samples.big_blob(20 * MB), "audio/ogg")
    with pytest.raises(MediaTooLarge, match="Content-Length"):
        download_media(url, _settings(twilio_fake), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_limit_is_exact(twilio_fake, tmp_path):
    data = samples.big_blob(20 * MB)[:4096]
    url = twilio_fake.add_media(data, "application/octet-stream")
    assert download_media(url, _settings(twilio_fake, max_media_bytes=4096), tmp_path).size == 4096
    url = twilio_fake.add_media(data + b"x", "application/octet-stream")
    with pytest.raises(MediaTooLarge):
        download_media(url, _settings(twilio_fake, max_media_bytes=4096), tmp_path)


def test_missing_credentials_give_a_permanent_error(twilio_fake, tmp_path):
    url = twilio_fake.add_media(b"OggS", "audio/ogg")
    with pytest.raises(MediaDownloadError) as err:
        download_media(url, _settings(twilio_fake, twilio_auth_token=None), tmp_path)
    assert err.value.status == 401 and not err.value.retryable
    assert "Authorization" not in twilio_fake.requests[0].headers
    assert list(tmp_path.iterdir()) == []


def test_server_error_is_retryable(twilio_fake, tmp_path):
    url = twilio_fake.add_media(b"OggS", "audio/ogg")
    twilio_fake.fail_next(503)
    with pytest.raises(MediaDownloadError) as err:
        download_media(url, _settings(twilio_fake), tmp_path)
    assert err.value.status == 503 and err.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_read_timeout_is_retryable_and_cleans_up(twilio_fake, tmp_path, monkeypatch):
    monkeypatch.setattr(media_download, "READ_TIMEOUT", 0.3)
    url = twilio_fake.add_media(b"OggS", "audio/ogg")
    twilio_fake.fail_next(200, delay=1.5)
    with pytest.raises(MediaDownloadError, match="timed out") as err:
        download_media(url, _settings(twilio_fake), tmp_path)
    assert err.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_retryable(tmp_path):
    with pytest.raises(MediaDownloadError) as err:
        download_media("http://127.0.0.1:9/media",
                       Settings.from_env(env=EMULATOR_ENV, media_allowed_hosts=("127.0.0.1",)), tmp_path)
    assert err.value.retryable
    assert list(tmp_path.iterdir()) == []
