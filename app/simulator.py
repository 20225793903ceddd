"""The dashboard's chat simulator: an operator talks to the bot as a simulated user.

A simulated message is stored exactly like a WhatsApp one (same table, same inbox, same
pipeline) on the ``simulator`` channel; replies are recorded by the simulator channel
instead of going to Twilio. Uploaded voice notes are kept under instance/uploads and
referenced as ``upload:<name>``, which only the simulator channel may use.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

from app.audio import sniff_audio_type
from app.inbound import Inbound, store_inbound

UPLOAD_SCHEME = "upload:"
_UPLOAD_NAME = re.compile(r"^[A-Za-z0-9_-]{16,64}\.(ogg|mp3|wav|m4a|aac|amr|webm|flac)$")
_EXTENSIONS = {"ogg": "audio/ogg", "mp3": "audio/mpeg", "wav": "audio/wav", "m4a": "audio/mp4",
               "mp4": "audio/mp4", "aac": "audio/aac", "amr": "audio/amr", "webm": "audio/webm", "flac": "audio/flac"}


class SimulatorInputError(ValueError):
    """The operator's input cannot be simulated; the text says why (Portuguese, shown on the page)."""


def simulator_phone(session_key: str) -> str:
    return "sim:" + re.sub(r"[^A-Za-z0-9]", "", session_key)[:16]


def uploads_dir(settings) -> Path:
    return Path(settings.instance_dir) / "uploads"


def upload_path(settings, media_url: str) -> Path:
    """The file behind an ``upload:`` URL; refuses anything that is not one of our names."""
    name = media_url[len(UPLOAD_SCHEME):]
    if not _UPLOAD_NAME.match(name):
        raise SimulatorInputError("upload desconhecido")
    return uploads_dir(settings) / name


def simulate_message(services, session_key: str, text: str | None = None,
                     audio: bytes | None = None) -> int:
    """Store a simulated inbound message and wake the inbox; returns the simulated user's id."""
    text = (text or "").strip()
    if not text and not audio:
        raise SimulatorInputError("Escreva uma mensagem ou envie um áudio.")
    media_url = media_type = None
    kind = "text"
    if audio:
        if len(audio) > services.settings.max_media_bytes:
            raise SimulatorInputError("Arquivo grande demais (máximo 16 MB).")
        sniffed = sniff_audio_type(audio[:96])
        extension = {"opus": "ogg", "ogg": "ogg", "mp3": "mp3", "wav": "wav", "mp4": "m4a",
                     "aac": "aac", "amr": "amr", "webm": "webm", "flac": "flac"}.get(sniffed or "")
        if extension is None:
            raise SimulatorInputError("Esse arquivo não parece ser um áudio (OGG, MP3, WAV, M4A, AAC, AMR, WebM).")
        name = f"{secrets.token_urlsafe(18)}.{extension}"
        folder = uploads_dir(services.settings)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(audio)
        media_url, media_type, kind = UPLOAD_SCHEME + name, _EXTENSIONS[extension], "audio"
    inbound = Inbound(
        sid="SIM" + secrets.token_hex(16), phone=simulator_phone(session_key), wa_id=None,
        profile_name="Simulador", body=text, kind=kind, media_url=media_url, media_type=media_type,
        num_media=1 if audio else 0,
    )
    user_id, _ = store_inbound(services.db, inbound, channel="simulator")
    services.inbox.notify(user_id)
    return user_id
