"""Media storage: local files behind signed URLs (served by app/web/media.py) and GCS via the emulator."""
from __future__ import annotations

import os
import secrets
import stat
import time
from types import SimpleNamespace

import pytest
import requests
from flask import Flask
from itsdangerous import URLSafeTimedSerializer

from app.clients import storage as storage_module
from app.clients.storage import (
    GCSStorage,
    LocalStorage,
    MediaTokenExpired,
    MediaTokenInvalid,
    StorageError,
    build_storage,
    load_or_create_secret,
)
from app.config import Settings
from app.web.media import bp as media_bp
from tests.fakes import audio_samples as samples

BASE = "https://bot.example.com"


def _local_settings(tmp_path, **overrides) -> Settings:
    values = dict(instance_dir=str(tmp_path / "instance"), public_base_url=BASE,
                  secret_key="test-secret-key-0123456789abcdef")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def local(tmp_path) -> LocalStorage:
    return LocalStorage(_local_settings(tmp_path))


@pytest.fixture
def client(local):
    app = Flask(__name__)
    app.extensions["endrigo"] = SimpleNamespace(storage=local)
    app.register_blueprint(media_bp)
    return app.test_client()


def _path(url: str) -> str:
    assert url.startswith(BASE + "/media/")
    return url[len(BASE):]


# ---- local storage and the media route -----------------------------------------------------------

def test_saved_ogg_is_served_with_its_content_type(local, client):
    note = samples.speech_like_ogg(1.0)
    stored = local.save(note, "audio/ogg", ".ogg")

    assert (stored.content_type, stored.size) == ("audio/ogg", len(note))
    assert storage_module.KEY_PATTERN.fullmatch(stored.key)
    assert (local.root / stored.key).read_bytes() == note
    response = client.get(_path(stored.url))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/ogg"
    assert response.headers["Content-Length"] == str(len(note))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.data == note


def test_head_is_supported(local, client):
    stored = local.save(b"ID3" + b"\x00" * 500, "audio/mpeg", ".mp3")
    response = client.head(_path(stored.url))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.headers["Content-Length"] == "503"
    assert response.data == b""


def test_names_are_random_and_unguessable(local):
    keys = {local.save(b"OggS", "audio/ogg", ".ogg").key for _ in range(20)}
    assert len(keys) == 20
    assert all(len(key) == 36 for key in keys)


def test_tampered_token_is_forbidden(local, client):
    path = _path(local.save(b"OggS", "audio/ogg", ".ogg").url)
    tampered = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
    assert client.get(tampered).status_code == 403
    assert client.get("/media/" + "x" * 600).status_code == 403
    assert client.get("/media/nonsense").status_code == 403


def test_token_signed_with_another_secret_is_forbidden(local, client, tmp_path):
    stored = local.save(b"OggS", "audio/ogg", ".ogg")
    other = LocalStorage(_local_settings(tmp_path, secret_key="another-secret-key-0123456789ab"))
    assert client.get(_path(other.url_for(stored.key))).status_code == 403


def test_signed_traversal_name_is_refused(local, client):
    # Even a genuinely signed token must name a file of our own pattern.
    (local.root.parent / "secret_key").write_text("s" * 64)
    for name in ("../secret_key", "..%2Fsecret_key", "/etc/passwd", "a" * 32 + ".ogg/..", "a" * 32 + ".ogg\n"):
        token = local.make_token(name)
        assert client.get(f"/media/{token}").status_code == 403
        with pytest.raises(MediaTokenInvalid):
            local.verify_token(token)


def test_expired_token_is_gone(local, client, monkeypatch):
    stored = local.save(b"OggS", "audio/ogg", ".ogg")
    real_time = time.time
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: real_time() - local.ttl_seconds - 60)
        old_token = local.make_token(stored.key)
    assert client.get(f"/media/{old_token}").status_code == 410
    with pytest.raises(MediaTokenExpired):
        local.verify_token(old_token)
    assert client.get(_path(stored.url)).status_code == 200


def test_missing_file_is_not_found(local, client):
    stored = local.save(b"OggS", "audio/ogg", ".ogg")
    (local.root / stored.key).unlink()
    assert client.get(_path(stored.url)).status_code == 404


def test_base_url_comes_from_the_caller_when_not_configured(tmp_path):
    local = LocalStorage(_local_settings(tmp_path, public_base_url=None))
    with pytest.raises(StorageError, match="PUBLIC_BASE_URL"):
        local.save(b"OggS", "audio/ogg", ".ogg")
    assert not any(local.root.iterdir())  # nothing written when no URL can be made
    stored = local.save(b"OggS", "audio/ogg", ".ogg", base_url="https://abc.ngrok.app/")
    assert stored.url.startswith("https://abc.ngrok.app/media/")


@pytest.mark.parametrize("content_type, suffix", [("audio/ogg", ".wav"), ("audio/mpeg", ".ogg"),
                                                  ("text/html", ".ogg"), ("audio/ogg", "/../x.ogg")])
def test_mismatched_or_unknown_types_are_refused(local, content_type, suffix):
    with pytest.raises(StorageError):
        local.save(b"OggS", content_type, suffix)


def test_mp3_alias_is_normalised(local):
    assert local.save(b"ID3", "audio/mp3", ".mp3").content_type == "audio/mpeg"


def test_open_returns_bytes_and_type(local):
    stored = local.save(b"OggS-data", "audio/ogg", ".ogg")
    assert local.open(stored.key) == (b"OggS-data", "audio/ogg")
    with pytest.raises(FileNotFoundError):
        local.open("../secret_key")


def test_cleanup_removes_only_old_files(local):
    old = local.save(b"OggS", "audio/ogg", ".ogg")
    fresh = local.save(b"OggS", "audio/ogg", ".ogg")
    foreign = local.root / "keep-me.txt"
    foreign.write_text("not ours")
    eight_days_ago = time.time() - 8 * 86400
    for path in (local.root / old.key, foreign):
        os.utime(path, (eight_days_ago, eight_days_ago))

    assert local.cleanup() == 1  # retention: media_retention_days=7
    assert not (local.root / old.key).exists()
    assert (local.root / fresh.key).exists() and foreign.exists()
    assert local.cleanup(older_than_days=0) == 1


def test_status_reports_without_secrets(local):
    local.save(b"OggS", "audio/ogg", ".ogg")
    status = local.status()
    assert status["backend"] == "local" and status["files"] == 1 and status["bytes"] == 4
    assert local.settings.secret_key not in repr(status)


def test_secret_is_created_once_with_private_permissions(tmp_path):
    first = load_or_create_secret(tmp_path / "inst")
    path = tmp_path / "inst" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_or_create_secret(tmp_path / "inst") == first
    assert [p.name for p in (tmp_path / "inst").iterdir()] == ["secret_key"]  # no temporary left over


def test_without_secret_key_urls_survive_a_restart(tmp_path):
    settings = _local_settings(tmp_path, secret_key=None)
    stored = LocalStorage(settings).save(b"OggS", "audio/ogg", ".ogg")
    token = stored.url.rsplit("/", 1)[1]
    assert LocalStorage(settings).verify_token(token) == stored.key


def test_build_storage_picks_the_backend(tmp_path):
    assert isinstance(build_storage(_local_settings(tmp_path)), LocalStorage)
    gcs = build_storage(_local_settings(tmp_path, media_backend="gcs", gcs_bucket_name="b"))
    assert isinstance(gcs, GCSStorage)  # the client is created lazily: no network here


def test_route_is_404_when_storage_is_not_local(tmp_path):
    app = Flask(__name__)
    app.extensions["endrigo"] = SimpleNamespace(storage=object())
    app.register_blueprint(media_bp)
    token = URLSafeTimedSerializer("k", salt=storage_module.TOKEN_SALT).dumps("a" * 32 + ".ogg")
    assert app.test_client().get(f"/media/{token}").status_code == 404


# ---- Google Cloud Storage through gcp-storage-emulator ----------------------------------------------

BUCKET = "endrigo-media-test"


@pytest.fixture(scope="module")
def gcs_emulator():
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    server.start()
    port = server._api._httpd.server_port  # port 0: the OS picked one
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def signing_credentials():
    """Service-account credentials around an RSA key made here; the emulator does not verify."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return service_account.Credentials.from_service_account_info({
        "type": "service_account", "project_id": "test", "private_key_id": "k1", "private_key": pem,
        "client_email": "signer@test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    })


@pytest.fixture
def gcs_settings(gcs_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)

    def factory(**overrides) -> Settings:
        values = dict(instance_dir=str(tmp_path / "instance"), media_backend="gcs", gcs_bucket_name=BUCKET,
                      storage_emulator_host=gcs_emulator)
        values.update(overrides)
        return Settings(**values)

    return factory


def test_gcs_upload_has_content_type_and_signed_url_fetches_it(gcs_settings, gcs_emulator, signing_credentials):
    from google.auth.credentials import AnonymousCredentials

    store = GCSStorage(gcs_settings(), signing_credentials=signing_credentials)
    note = samples.speech_like_ogg(1.0)

    stored = store.save(note, "audio/ogg", ".ogg")

    assert isinstance(store.client._credentials, AnonymousCredentials)  # never real credentials under the emulator
    blob = store.bucket.get_blob(stored.key)
    assert blob is not None and blob.content_type == "audio/ogg" and blob.size == len(note)
    assert stored.url.startswith(f"{gcs_emulator}/{BUCKET}/{stored.key}?")
    assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in stored.url and "X-Goog-Signature=" in stored.url
    assert "signer%40test.iam.gserviceaccount.com" in stored.url  # signed with the key we passed
    response = requests.get(stored.url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/ogg"
    assert response.content == note


def test_gcs_without_given_signing_key_signs_with_an_ephemeral_one(gcs_settings):
    store = GCSStorage(gcs_settings())
    stored = store.save(b"ID3" + secrets.token_bytes(64), "audio/mpeg", ".mp3")
    assert "X-Goog-Signature=" in stored.url
    assert requests.get(stored.url, timeout=5).headers["Content-Type"] == "audio/mpeg"


def test_gcs_public_bucket_url_fetches_the_object(gcs_settings, gcs_emulator):
    store = GCSStorage(gcs_settings(gcs_public_bucket=True))
    stored = store.save(b"OggS-public", "audio/ogg", ".ogg")
    assert stored.url == f"{gcs_emulator}/{BUCKET}/{stored.key}"
    assert requests.get(stored.url, timeout=5).content == b"OggS-public"


def test_gcs_open_cleanup_and_status(gcs_settings):
    store = GCSStorage(gcs_settings())
    stored = store.save(b"OggS-x", "audio/ogg", ".ogg")
    assert store.open(stored.key) == (b"OggS-x", "audio/ogg")
    assert store.cleanup() == 0  # younger than the retention
    assert store.cleanup(older_than_days=0) >= 1
    assert store.bucket.get_blob(stored.key) is None
    status = store.status()
    assert status == {"backend": "gcs", "bucket": BUCKET, "public_bucket": False, "emulator": True,
                      "url_ttl_seconds": 3600, "retention_days": 7, "credentials": "anonymous (emulator)"}


def test_gcs_upload_failure_is_a_storage_error(gcs_settings):
    store = GCSStorage(gcs_settings(gcs_bucket_name="no-such-bucket"))
    with pytest.raises(StorageError, match="GCS upload failed"):
        store.save(b"OggS", "audio/ogg", ".ogg")
