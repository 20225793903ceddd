"""The start-up report: what this process can and cannot do, and why, logged once at start.

An operator reading the first lines of the log should learn, without opening the code:
what runs offline and which variable would change that, what is locked, where the media
lives, and the two URLs to paste into Twilio. Names of variables only: never a value that
could be a secret (keys, tokens, passwords) or a phone number.
"""
from __future__ import annotations

import logging
from pathlib import Path

from app.config import Settings, listen_address, security_warnings

log = logging.getLogger(__name__)

INBOUND_PATH = "/webhook/whatsapp"
STATUS_PATH = "/webhook/whatsapp/status"
REALTIME_PATH = "/webhook/whatsapp/realtime"


def local_base_url(env=None) -> str:
    """The http origin this server answers on locally (from BIND or HOST:PORT)."""
    address = listen_address(env, default_host="127.0.0.1")
    if address.startswith(("unix:", "fd://")):
        return f"(a socket: {address})"
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # listening on every interface: this machine answers on loopback too
    return f"http://{host}:{port}"


def startup_report(settings: Settings, env=None) -> list[tuple[int, str]]:
    """The report as (logging level, line) pairs, in the order they are logged."""
    lines: list[tuple[int, str]] = [(logging.WARNING, w) for w in security_warnings(settings)]
    warn, info = logging.WARNING, logging.INFO

    # -- offline, and why --------------------------------------------------------------------
    if settings.offline:
        lines.append((warn, "offline: OpenAI (OPENAI_API_KEY unset) - answers come from the knowledge base "
                            "alone, voice notes are not transcribed, retrieval uses keywords (BM25) only"))
    else:
        lines.append((info, f"online: OpenAI (answers {settings.openai_model}, transcription "
                            f"{settings.openai_transcribe_model}, embeddings {settings.openai_embedding_model})"))
        speaker = (f"voice {settings.openai_realtime_voice}" if settings.realtime_voice == "openai"
                   else "spoken by ElevenLabs")
        lines.append((info, f"online: realtime voice ({settings.openai_realtime_model}, {speaker}, "
                            f"{settings.realtime_timeout_seconds:g} s) for voice notes on {REALTIME_PATH}"))
    if settings.elevenlabs_configured:
        lines.append((info, "online: ElevenLabs - voice replies in Endrigo's voice"))
    else:
        lines.append((warn, "offline: ElevenLabs (ELEVENLABS_API_KEY unset) - replies are text only"))
    missing = [name for name, value in (("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                                        ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                                        ("TWILIO_PHONE_NUMBER", settings.twilio_phone_number)) if not value]
    if missing:
        lines.append((warn, f"offline: Twilio ({', '.join(missing)} unset) - no WhatsApp sending: replies are "
                            "recorded (dashboard) but not sent"))
    else:
        lines.append((info, "online: Twilio - replies are sent to WhatsApp"))
    if settings.media_backend == "gcs":
        access = "public URLs" if settings.gcs_public_bucket else "V4 signed URLs"
        lines.append((info, f"storage: Google Cloud Storage bucket {settings.gcs_bucket_name} ({access})"))
    else:
        media = Path(settings.instance_dir) / "media"
        lines.append((info, f"storage: local files in {media}, served by this app at /media/<signed token> "
                            f"for {settings.media_url_ttl_seconds} s"))

    # -- locked, and why ------------------------------------------------------------------------
    if settings.dashboard_password:
        lines.append((info, "dashboard: operator login at /login (stats, conversations, leads, handoffs, "
                            "simulator)"))
    else:
        lines.append((warn, "dashboard locked: set DASHBOARD_PASSWORD to open stats, conversations, leads, "
                            "handoffs and the simulator (the status page and /health stay public)"))
    if not settings.start_workers:
        lines.append((warn, "inbox paused (INBOX_ENABLED=false): webhooks are stored but not answered"))

    # -- what to paste into Twilio --------------------------------------------------------------
    if settings.public_base_url:
        base = settings.public_base_url
        lines.append((info, f"Twilio webhook, 'A message comes in' (POST): {base}{INBOUND_PATH}"))
        lines.append((info, f"Twilio status callback URL (POST): {base}{STATUS_PATH} (sent with every "
                            "message: nothing to paste)"))
    else:
        local = local_base_url(env)
        lines.append((warn, "PUBLIC_BASE_URL is unset: Twilio needs the public https origin it calls (a "
                            f"tunnel or proxy to this server). Locally the webhooks are {local}{INBOUND_PATH} "
                            f"and {local}{STATUS_PATH}; until it is set, status callbacks and voice-reply "
                            "URLs use the origin of the first validly signed webhook"))
    return lines


def log_startup_report(settings: Settings, env=None) -> None:
    """Log the report, one line per item (grep-able: every line starts with ``start-up:``)."""
    for level, line in startup_report(settings, env):
        log.log(level, "start-up: %s", line)
