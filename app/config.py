"""Typed configuration: every environment variable the app reads, in one place.

Nothing else in the code base reads ``os.environ`` for settings. ``Settings.from_env``
builds an immutable object; ``create_app(config)`` accepts a ``Settings`` or a dict of
overrides (tests use the latter). Boot normalisation (phone numbers, URLs) happens here
so that a bad value stops start-up with a message naming the variable.

``load_env_file()`` reads the operator's ``.env``; every entry point calls it before it
reads the environment (main.py, gunicorn.conf.py, migrations/env.py, app/ops/migrate.py),
so the server, the migrations and the Flask CLI see the same settings.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.business_hours import BusinessHours, BusinessHoursError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The app's version (app.__version__), shown by /health and the status page.
VERSION = "0.1.0"

# Hosts Twilio serves inbound media from: the REST API (which redirects) and its media CDNs.
DEFAULT_MEDIA_HOSTS = (
    "api.twilio.com",
    "mms.twiliocdn.com",
    "media.twiliocdn.com",
    "s3-external-1.amazonaws.com",
    "s3.amazonaws.com",
)

DEFAULT_OPENAI_MODEL = "gpt-5.4-mini"
DEFAULT_REALTIME_MODEL = "gpt-realtime-2"
DEFAULT_REALTIME_VOICE = "marin"
# Who speaks a realtime answer: the Realtime session's own voice, or Endrigo's cloned ElevenLabs voice.
REALTIME_VOICES = ("openai", "elevenlabs")


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""


def load_env_file(path: str | os.PathLike | None = None, environ=None) -> Path | None:
    """Copy the settings of one ``.env`` file into ``environ`` (default ``os.environ``).

    Variables already in the environment are never overridden: the real environment
    (systemd, Docker, the shell) wins over the file. Which file: ``path``; else the one
    ``ENV_FILE`` names (it must exist); else the nearest ``.env`` from the current
    directory upwards (the file ``flask`` itself reads); else the project root's
    ``.env``. Returns the file read, or None when there is none.
    """
    from dotenv import dotenv_values, find_dotenv

    environ = os.environ if environ is None else environ
    named = path or environ.get("ENV_FILE")
    if named:
        file = Path(named).expanduser()
        if not file.is_file():
            raise ConfigError(f"ENV_FILE names {str(file)!r}, which is not a file")
    else:
        found = find_dotenv(".env", usecwd=True)
        file = Path(found) if found else PROJECT_ROOT / ".env"
        if not file.is_file():
            return None
    for key, value in dotenv_values(file, encoding="utf-8").items():
        if value is not None and key not in environ:
            environ[key] = value
    return file


def listen_address(env=None, default_host: str = "0.0.0.0") -> str:
    """Where the HTTP server listens: ``BIND`` (gunicorn syntax), else ``HOST:PORT``."""
    env = os.environ if env is None else env
    bind = _str(env, "BIND")
    if bind:
        return bind
    return f"{_str(env, 'HOST', default_host)}:{_int(env, 'PORT', 5000)}"


def normalize_whatsapp_number(value: str, variable: str = "TWILIO_PHONE_NUMBER") -> str:
    """Return ``whatsapp:+E164`` for ``14155238886``, ``+1 415-523-8886`` or ``whatsapp:+14155238886``."""
    raw = value.strip()
    if raw.lower().startswith("whatsapp:"):
        raw = raw[len("whatsapp:"):]
    digits = re.sub(r"[\s\-().]", "", raw)
    if digits.startswith("+"):
        digits = digits[1:]
    if not re.fullmatch(r"[1-9]\d{7,14}", digits):
        raise ConfigError(f"{variable} is not a phone number (expected e.g. whatsapp:+14155238886)")
    return f"whatsapp:+{digits}"


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _optional_int(env, name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return _int(env, name, 0)


def _str(env, name: str, default: str | None = None) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """All settings. Field names are the lower-case environment variable names."""

    database_url: str = f"sqlite:///{PROJECT_ROOT / 'instance' / 'endrigo.db'}"
    public_base_url: str | None = None
    instance_dir: str = str(PROJECT_ROOT / "instance")
    documents_dir: str = str(PROJECT_ROOT / "documents")

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_phone_number: str | None = None
    twilio_api_base_url: str | None = None
    twilio_typing_indicator: bool = True
    twilio_validate_signature: bool = True
    # TWILIO_WEBHOOK_SHARED_KEYS: (key id, secret) pairs of Twilio SharedKeys; several during a
    # rotation. A webhook whose signature-settings header names a key is checked with its secret.
    twilio_webhook_shared_keys: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    media_allowed_hosts: tuple[str, ...] = DEFAULT_MEDIA_HOSTS
    # MEDIA_ALLOW_PRIVATE_HOSTS=true (staging, emulators): media over http and from loopback/
    # private addresses. Off in production: a MediaUrl is attacker-influenced (SSRF).
    media_allow_private_hosts: bool = False

    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = DEFAULT_OPENAI_MODEL
    openai_transcribe_model: str = "gpt-transcribe"
    openai_embedding_model: str = "text-embedding-3-small"
    openai_realtime_model: str = DEFAULT_REALTIME_MODEL
    openai_realtime_url: str | None = None
    openai_realtime_voice: str = DEFAULT_REALTIME_VOICE
    realtime_voice: str = "openai"
    realtime_timeout_seconds: float = 12.0
    openai_timeout_seconds: float = 20.0
    openai_max_retries: int = 2

    elevenlabs_api_key: str | None = None
    elevenlabs_base_url: str | None = None
    elevenlabs_voice_id: str = "SuM1a4mUYXCmWfwWYCx0"
    elevenlabs_model_id: str = "eleven_multilingual_v2"

    media_backend: str = "local"
    gcs_bucket_name: str | None = None
    gcs_public_bucket: bool = False
    google_application_credentials: str | None = None
    storage_emulator_host: str | None = None
    media_url_ttl_seconds: int = 3600
    media_retention_days: int = 7
    max_media_bytes: int = 16 * 1024 * 1024
    max_audio_seconds: int = 300

    workers: int = 8
    coalesce_window_seconds: float = 0.8
    lease_seconds: float = 120.0
    recovery_interval_seconds: float = 30.0
    # Retry schedule for a turn whose answer failed (seconds); after the last one, the turn fails.
    retry_backoff_seconds: tuple[float, ...] = (30.0, 120.0, 600.0, 3600.0)
    handoff_expiry_hours: float = 24.0
    # Human takeover (app/assistant/handoff.py): the team's hours, the wait for a first
    # operator answer (counted from the next opening), and where the team is notified.
    business_hours: str = "mon-fri 09:00-18:00"
    handoff_timeout_hours: float = 4.0
    handoff_notify_webhook_url: str | None = None
    handoff_notify_whatsapp: tuple[str, ...] = ()
    handoff_notify_content_sid: str | None = None
    turn_budget_seconds: float = 8.0

    dashboard_password: str | None = None
    secret_key: str | None = None
    max_request_bytes: int = 256 * 1024
    assistant_id: str | None = None
    log_level: str = "INFO"
    # Forwarded headers (X-Forwarded-For/-Proto/-Host/-Port/-Prefix) are trusted only from a
    # configured proxy: TRUSTED_PROXY_COUNT hops, and/or only when the direct peer is one of
    # TRUSTED_PROXIES (addresses or networks). Both unset: no forwarded header is believed.
    trusted_proxy_count: int = 0
    trusted_proxies: tuple[str, ...] = ()

    # ---- trust: limits, the 24-hour window, retention --------------------------------
    user_messages_per_minute: int = 12
    user_messages_per_day: int = 200
    user_audio_seconds_per_day: int = 900
    # Model calls (answers, transcriptions, embeddings) per day for the whole app; None: no limit.
    ai_calls_per_day: int | None = None
    # A Twilio Content template (HX...) for replies outside WhatsApp's 24-hour window.
    twilio_fallback_content_sid: str | None = None
    # Conversation content and media older than this many days are deleted; None: kept.
    retention_days: int | None = None
    # INBOX_ENABLED=false: accept and store webhooks without processing them (benchmarks of
    # ingestion, maintenance windows); tests use it to drive the inbox by hand.
    start_workers: bool = True

    # ---- scale-out (docs/DEPLOY.md, "Scale-out") ----------------------------------------
    # thread: turns run in each web process's thread pool (no Redis). celery: the web process
    # only stores and enqueues; `celery -A app.worker worker` runs the turns.
    queue_backend: str = "thread"
    celery_broker_url: str | None = None
    # Prefix of every Redis key of ours and of Celery's (several deployments on one Redis).
    celery_key_prefix: str = "endrigo:"
    # A task a worker took but never acknowledged (the whole worker was killed) is handed to
    # another worker after this long. Longer than any one drain of a user; a duplicate
    # delivery is harmless (the database lease), a lost one is caught by the recovery sweep.
    celery_visibility_timeout_seconds: float = 600.0
    # How many web instances run against this database (only used to warn about per-host state).
    web_instances: int = 1
    # Bearer token for GET /metrics; unset: /metrics refuses every request (401).
    metrics_token: str | None = None
    # prometheus-client's multiprocess directory (gunicorn workers, Celery workers on one host).
    prometheus_multiproc_dir: str | None = None
    # host:port where a Celery worker serves its own /metrics (workers on hosts without a web instance).
    worker_metrics_address: str | None = None

    # ---- derived -------------------------------------------------------------------
    # What is configured: the one answer for the gateways, /health, the status page and the
    # system JSON. "Configured" means the settings a provider needs are present, not that it answers.
    @property
    def openai_configured(self) -> bool:
        return bool(self.openai_api_key)

    @property
    def offline(self) -> bool:
        """No OpenAI key: answers come from the knowledge base alone."""
        return not self.openai_configured

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_phone_number)

    @property
    def hours(self):
        """BUSINESS_HOURS, parsed (validated at start-up)."""
        return BusinessHours.parse(self.business_hours)

    @property
    def elevenlabs_configured(self) -> bool:
        return bool(self.elevenlabs_api_key)

    def providers_configured(self) -> dict[str, bool]:
        return {"twilio": self.twilio_configured, "openai": self.openai_configured,
                "elevenlabs": self.elevenlabs_configured}

    def replace(self, **changes) -> "Settings":
        return _normalised(dataclasses.replace(self, **changes))

    # ---- construction --------------------------------------------------------------
    @classmethod
    def from_env(cls, env=None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        d = cls()
        values = dict(
            database_url=_str(env, "DATABASE_URL", d.database_url),
            public_base_url=_str(env, "PUBLIC_BASE_URL"),
            twilio_account_sid=_str(env, "TWILIO_ACCOUNT_SID"),
            twilio_auth_token=_str(env, "TWILIO_AUTH_TOKEN"),
            twilio_phone_number=_str(env, "TWILIO_PHONE_NUMBER"),
            twilio_api_base_url=_str(env, "TWILIO_API_BASE_URL"),
            twilio_typing_indicator=_bool(env.get("TWILIO_TYPING_INDICATOR"), d.twilio_typing_indicator),
            twilio_validate_signature=_bool(env.get("TWILIO_VALIDATE_SIGNATURE"), True),
            twilio_webhook_shared_keys=parse_shared_keys(env.get("TWILIO_WEBHOOK_SHARED_KEYS")),
            media_allowed_hosts=tuple(
                h.strip().lower() for h in (_str(env, "MEDIA_ALLOWED_HOSTS") or "").split(",") if h.strip()
            ) or DEFAULT_MEDIA_HOSTS,
            media_allow_private_hosts=_bool(env.get("MEDIA_ALLOW_PRIVATE_HOSTS"), False),
            openai_api_key=_str(env, "OPENAI_API_KEY"),
            openai_base_url=_str(env, "OPENAI_BASE_URL"),
            openai_model=_str(env, "OPENAI_MODEL", d.openai_model),
            openai_transcribe_model=_str(env, "OPENAI_TRANSCRIBE_MODEL", d.openai_transcribe_model),
            openai_embedding_model=_str(env, "OPENAI_EMBEDDING_MODEL", d.openai_embedding_model),
            openai_realtime_model=_str(env, "OPENAI_REALTIME_MODEL", d.openai_realtime_model),
            openai_realtime_url=_str(env, "OPENAI_REALTIME_URL"),
            openai_realtime_voice=_str(env, "OPENAI_REALTIME_VOICE", d.openai_realtime_voice),
            realtime_voice=(_str(env, "REALTIME_VOICE", d.realtime_voice) or d.realtime_voice).lower(),
            realtime_timeout_seconds=_float(env, "REALTIME_TIMEOUT_SECONDS", d.realtime_timeout_seconds),
            openai_timeout_seconds=_float(env, "OPENAI_TIMEOUT_SECONDS", d.openai_timeout_seconds),
            elevenlabs_api_key=_str(env, "ELEVENLABS_API_KEY"),
            elevenlabs_base_url=_str(env, "ELEVENLABS_BASE_URL"),
            elevenlabs_voice_id=_str(env, "ELEVENLABS_VOICE_ID", d.elevenlabs_voice_id),
            elevenlabs_model_id=_str(env, "ELEVENLABS_MODEL_ID", d.elevenlabs_model_id),
            media_backend=(_str(env, "MEDIA_BACKEND", "local") or "local").lower(),
            gcs_bucket_name=_str(env, "GCS_BUCKET_NAME"),
            gcs_public_bucket=_bool(env.get("GCS_PUBLIC_BUCKET"), False),
            google_application_credentials=_str(env, "GOOGLE_APPLICATION_CREDENTIALS"),
            storage_emulator_host=_str(env, "STORAGE_EMULATOR_HOST"),
            max_media_bytes=_int(env, "MAX_MEDIA_BYTES", d.max_media_bytes),
            max_audio_seconds=_int(env, "MAX_AUDIO_SECONDS", d.max_audio_seconds),
            media_url_ttl_seconds=_int(env, "MEDIA_URL_TTL_SECONDS", d.media_url_ttl_seconds),
            media_retention_days=_int(env, "MEDIA_RETENTION_DAYS", d.media_retention_days),
            turn_budget_seconds=_float(env, "TURN_BUDGET_SECONDS", d.turn_budget_seconds),
            workers=_int(env, "WORKERS", d.workers),
            coalesce_window_seconds=_float(env, "COALESCE_WINDOW_SECONDS", d.coalesce_window_seconds),
            recovery_interval_seconds=_float(env, "RECOVERY_INTERVAL_SECONDS", d.recovery_interval_seconds),
            handoff_expiry_hours=_float(env, "HANDOFF_EXPIRY_HOURS", d.handoff_expiry_hours),
            business_hours=_str(env, "BUSINESS_HOURS", d.business_hours),
            handoff_timeout_hours=_float(env, "HANDOFF_TIMEOUT_HOURS", d.handoff_timeout_hours),
            handoff_notify_webhook_url=_str(env, "HANDOFF_NOTIFY_WEBHOOK_URL"),
            handoff_notify_whatsapp=tuple(
                n.strip() for n in (_str(env, "HANDOFF_NOTIFY_WHATSAPP") or "").split(",") if n.strip()),
            handoff_notify_content_sid=_str(env, "HANDOFF_NOTIFY_CONTENT_SID"),
            dashboard_password=_str(env, "DASHBOARD_PASSWORD"),
            secret_key=_str(env, "SECRET_KEY"),
            assistant_id=_str(env, "ASSISTANT_ID"),
            log_level=(_str(env, "LOG_LEVEL", "INFO") or "INFO").upper(),
            trusted_proxy_count=_int(env, "TRUSTED_PROXY_COUNT", d.trusted_proxy_count),
            trusted_proxies=tuple(
                a.strip() for a in (_str(env, "TRUSTED_PROXIES") or "").split(",") if a.strip()
            ),
            user_messages_per_minute=_int(env, "USER_MESSAGES_PER_MINUTE", d.user_messages_per_minute),
            user_messages_per_day=_int(env, "USER_MESSAGES_PER_DAY", d.user_messages_per_day),
            user_audio_seconds_per_day=_int(env, "USER_AUDIO_SECONDS_PER_DAY", d.user_audio_seconds_per_day),
            ai_calls_per_day=_optional_int(env, "AI_CALLS_PER_DAY"),
            twilio_fallback_content_sid=_str(env, "TWILIO_FALLBACK_CONTENT_SID"),
            retention_days=_optional_int(env, "RETENTION_DAYS"),
            start_workers=_bool(env.get("INBOX_ENABLED"), True),
            queue_backend=(_str(env, "QUEUE_BACKEND", d.queue_backend) or d.queue_backend).lower(),
            celery_broker_url=_str(env, "CELERY_BROKER_URL"),
            celery_key_prefix=_str(env, "CELERY_KEY_PREFIX", d.celery_key_prefix),
            celery_visibility_timeout_seconds=_float(env, "CELERY_VISIBILITY_TIMEOUT_SECONDS",
                                                     d.celery_visibility_timeout_seconds),
            web_instances=_int(env, "WEB_INSTANCES", d.web_instances),
            metrics_token=_str(env, "METRICS_TOKEN"),
            prometheus_multiproc_dir=_str(env, "PROMETHEUS_MULTIPROC_DIR"),
            worker_metrics_address=_str(env, "WORKER_METRICS_ADDRESS"),
        )
        values.update(overrides)
        return _normalised(cls(**values))


SHARED_KEY_MIN_SECRET = 8  # shorter values would not even be masked in logs (app.redaction)
_SHARED_KEY_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def parse_shared_keys(raw) -> tuple[tuple[str, str], ...]:
    """TWILIO_WEBHOOK_SHARED_KEYS: ``keyId=secret`` entries separated by commas.

    The key id ends at the first ``=``; the secret is the rest (base64 secrets may end in
    ``=``). Blank entries are ignored; a duplicate id, an entry without ``=``, an empty or
    short secret stop start-up naming the variable (never showing a secret). Also accepts
    the parsed form (pairs, or a dict) given as an override.
    """
    if raw is None:
        return ()
    if isinstance(raw, dict):
        entries = [(str(k), str(v)) for k, v in raw.items()]
    elif isinstance(raw, str):
        entries = []
        for position, entry in enumerate(raw.split(","), start=1):
            if not entry.strip():
                continue
            key_id, separator, secret = entry.partition("=")
            if not separator:
                raise ConfigError(f"TWILIO_WEBHOOK_SHARED_KEYS entry {position} is not keyId=secret")
            entries.append((key_id, secret))
    else:
        entries = [(str(k), str(v)) for k, v in raw]
    keys: dict[str, str] = {}
    for key_id, secret in entries:
        key_id, secret = key_id.strip(), secret.strip()
        if not _SHARED_KEY_ID.fullmatch(key_id):
            raise ConfigError("TWILIO_WEBHOOK_SHARED_KEYS has a key id that is empty or not made of "
                              "letters, digits, '_', '-' and '.'")
        if key_id in keys:
            raise ConfigError(f"TWILIO_WEBHOOK_SHARED_KEYS names key {key_id} twice")
        if len(secret) < SHARED_KEY_MIN_SECRET:
            raise ConfigError(f"TWILIO_WEBHOOK_SHARED_KEYS: the secret of key {key_id} is empty or shorter "
                              f"than {SHARED_KEY_MIN_SECRET} characters")
        keys[key_id] = secret
    return tuple(keys.items())


def _normalised(settings: Settings) -> Settings:
    """Validate and normalise values; raise ConfigError naming the variable."""
    changes: dict = {}
    shared_keys = parse_shared_keys(settings.twilio_webhook_shared_keys)  # also checks an override
    if shared_keys != settings.twilio_webhook_shared_keys:
        changes["twilio_webhook_shared_keys"] = shared_keys
    if settings.twilio_phone_number:
        changes["twilio_phone_number"] = normalize_whatsapp_number(settings.twilio_phone_number)
    if settings.public_base_url:
        url = settings.public_base_url.rstrip("/")
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
            raise ConfigError("PUBLIC_BASE_URL must be the app's public http(s) address, such as "
                              "https://bot.example.com or https://example.com/bot (no query)")
        changes["public_base_url"] = url
    if settings.media_backend not in {"local", "gcs"}:
        raise ConfigError("MEDIA_BACKEND must be 'local' or 'gcs'")
    if settings.media_backend == "gcs" and not settings.gcs_bucket_name:
        raise ConfigError("GCS_BUCKET_NAME is required when MEDIA_BACKEND=gcs")
    try:
        BusinessHours.parse(settings.business_hours)
    except BusinessHoursError as exc:
        raise ConfigError(f"BUSINESS_HOURS: {exc}") from exc
    if settings.handoff_timeout_hours <= 0:
        raise ConfigError("HANDOFF_TIMEOUT_HOURS must be a positive number of hours")
    if settings.handoff_notify_webhook_url and not re.match(r"^https?://[^/\s]+", settings.handoff_notify_webhook_url):
        raise ConfigError("HANDOFF_NOTIFY_WEBHOOK_URL must be an http(s) URL")
    numbers = tuple(normalize_whatsapp_number(n, "HANDOFF_NOTIFY_WHATSAPP") for n in settings.handoff_notify_whatsapp)
    if numbers != settings.handoff_notify_whatsapp:
        changes["handoff_notify_whatsapp"] = numbers
    if settings.handoff_notify_content_sid and not re.fullmatch(r"HX[0-9a-fA-F]{32}",
                                                                settings.handoff_notify_content_sid):
        raise ConfigError("HANDOFF_NOTIFY_CONTENT_SID must be a Content template SID (HX + 32 hex digits)")
    if settings.realtime_voice not in REALTIME_VOICES:
        raise ConfigError("REALTIME_VOICE must be 'openai' or 'elevenlabs'")
    if not 1 <= settings.realtime_timeout_seconds <= 120:
        raise ConfigError("REALTIME_TIMEOUT_SECONDS must be between 1 and 120")
    if settings.openai_realtime_url and not re.match(r"^wss?://[^/\s]+", settings.openai_realtime_url):
        raise ConfigError("OPENAI_REALTIME_URL must be a ws:// or wss:// URL such as wss://api.openai.com/v1")
    if settings.workers < 1:
        raise ConfigError("WORKERS must be at least 1")
    if settings.recovery_interval_seconds * 2 > settings.lease_seconds:
        # The recovery loop renews the leases this process holds; it must run well within one.
        raise ConfigError("the recovery interval must be at most half the lease length")
    if settings.coalesce_window_seconds < 0:
        raise ConfigError("COALESCE_WINDOW_SECONDS must not be negative")
    if settings.queue_backend not in {"thread", "celery"}:
        raise ConfigError("QUEUE_BACKEND must be 'thread' or 'celery'")
    if settings.queue_backend == "celery":
        if not settings.celery_broker_url:
            raise ConfigError("CELERY_BROKER_URL is required when QUEUE_BACKEND=celery (e.g. redis://127.0.0.1:6379/0)")
        if not re.match(r"^rediss?://", settings.celery_broker_url):
            raise ConfigError("CELERY_BROKER_URL must be a Redis URL (redis:// or rediss://)")
    if settings.celery_visibility_timeout_seconds < 1:
        raise ConfigError("CELERY_VISIBILITY_TIMEOUT_SECONDS must be at least 1")
    if settings.web_instances < 1:
        raise ConfigError("WEB_INSTANCES must be at least 1")
    if settings.metrics_token is not None and len(settings.metrics_token) < 16:
        raise ConfigError("METRICS_TOKEN must be at least 16 characters")
    if settings.worker_metrics_address:
        host, _, port = settings.worker_metrics_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("WORKER_METRICS_ADDRESS must be host:port, e.g. 0.0.0.0:9808")
        if not settings.metrics_token:
            raise ConfigError("WORKER_METRICS_ADDRESS needs METRICS_TOKEN (the worker's /metrics is protected too)")
    if settings.trusted_proxy_count < 0:
        raise ConfigError("TRUSTED_PROXY_COUNT must not be negative")
    for address in settings.trusted_proxies:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES: {address!r} is not an IP address or network") from None
    for name in ("user_messages_per_minute", "user_messages_per_day", "user_audio_seconds_per_day"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name.upper()} must be at least 1")
    if settings.ai_calls_per_day is not None and settings.ai_calls_per_day < 0:
        raise ConfigError("AI_CALLS_PER_DAY must not be negative")
    if settings.retention_days is not None and settings.retention_days < 1:
        raise ConfigError("RETENTION_DAYS must be at least 1 (unset keeps conversations)")
    if settings.twilio_fallback_content_sid and not re.fullmatch(r"HX[0-9a-fA-F]{32}",
                                                                 settings.twilio_fallback_content_sid):
        raise ConfigError("TWILIO_FALLBACK_CONTENT_SID must be a Content SID (HX followed by 32 hex digits)")
    scheme, _, rest = settings.database_url.partition("://")
    if scheme in {"postgres", "postgresql"}:
        # Neon/Heroku style URLs; SQLAlchemy 2.1 maps postgresql:// to psycopg 3, we ship psycopg2.
        changes["database_url"] = "postgresql+psycopg2://" + rest
    if not changes:
        return settings
    return dataclasses.replace(settings, **changes)


def security_warnings(settings: Settings) -> list[str]:
    """The boot warnings about unsafe or ignored settings (the start-up report explains the rest)."""
    warnings = []
    if not settings.twilio_validate_signature:
        warnings.append(
            "TWILIO_VALIDATE_SIGNATURE=false: webhook signatures are NOT checked. "
            "Anyone can post fake messages. Use only for local experiments."
        )
    if settings.media_allow_private_hosts:
        warnings.append(
            "MEDIA_ALLOW_PRIVATE_HOSTS=true: media downloads accept http and loopback/private "
            "addresses (no SSRF protection). Use only for staging and local emulators."
        )
    if settings.assistant_id:
        warnings.append(
            "ASSISTANT_ID is set but ignored: the OpenAI Assistants API was shut down on 2026-08-26; "
            "the persona now lives in documents/persona.md."
        )
    return warnings


def shared_state_warnings(settings: Settings) -> list[str]:
    """Per-host state that breaks once several hosts serve one deployment (Celery workers, web instances)."""
    warnings = []
    shared = settings.queue_backend == "celery" or settings.web_instances > 1
    if shared and settings.media_backend == "local":
        warnings.append(
            "SHARED STATE: MEDIA_BACKEND=local with "
            + ("QUEUE_BACKEND=celery" if settings.queue_backend == "celery" else
               f"WEB_INSTANCES={settings.web_instances}")
            + ": voice replies (and the simulator's uploads) are written to this host's disk, and an instance or worker on another "
            "host cannot serve or find them. Use MEDIA_BACKEND=gcs unless every process runs on this host."
        )
    if shared and not settings.secret_key:
        warnings.append(
            "SHARED STATE: SECRET_KEY is not set, so each host generates its own in instance/secret_key; "
            "sessions and media URLs signed on one host are refused on another. Set the same SECRET_KEY "
            "in the environment of every web instance and worker."
        )
    return warnings


# ---- the instance's own secret -------------------------------------------------------------

def load_or_create_secret(instance_dir: str | os.PathLike) -> str:
    """A stable per-instance secret in ``{instance_dir}/secret_key`` (created once, mode 0600).

    Used when SECRET_KEY is not configured, so that URLs keep working across restarts and
    across the worker processes of one instance. Creation here is atomic
    (write a temporary file, then hard-link it into place), so two workers starting at once
    agree on one secret and nobody ever reads a half-written file.
    """
    directory = Path(instance_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "secret_key"
    if not path.exists():
        fd, temp_name = tempfile.mkstemp(prefix=".secret_key-", dir=directory)  # mkstemp uses 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temp_name, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
        finally:
            os.unlink(temp_name)
    return _read_secret(path)


def _read_secret(path: Path, attempts: int = 20) -> str:
    """Read the secret; an empty or short key must never be used for signing."""
    for _ in range(attempts):
        secret = path.read_text().strip()
        if len(secret) >= 32:
            return secret
        time.sleep(0.05)
    raise RuntimeError(f"{path} holds no usable secret; delete it to create a new one")
