"""The simulator channel's input: an operator's chat message becomes our own ``Inbound``.

A simulated message is stored exactly like a WhatsApp one (same table, same inbox, same
pipeline; the dashboard's simulator view stores it) on the ``simulator`` channel; replies
are recorded by the simulator channel (``outbound``) instead of going to Twilio. Uploaded voice notes are kept under instance/uploads and
referenced as ``upload:<name>``, which only the simulator channel may use.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

from app.audio.formats import FORMATS, sniff_audio_type
from app.turn import Inbound

UPLOAD_SCHEME = "upload:"
_UPLOAD_NAME = re.compile(r"^[A-Za-z0-9_-]{16,64}\.(" + "|".join(sorted({f.suffix[1:] for f in FORMATS.values()})) + ")$")


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


def simulated_inbound(settings, session_key: str, text: str | None = None, audio: bytes | None = None,
                      profile_name: str = "Simulador") -> Inbound:
    """The operator's text or uploaded voice note as an ``Inbound`` (the upload is kept under instance/uploads)."""
    text = (text or "").strip()
    if not text and not audio:
        raise SimulatorInputError("Escreva uma mensagem ou envie um áudio.")
    media_url = media_type = None
    kind = "text"
    if audio:
        if len(audio) > settings.max_media_bytes:
            raise SimulatorInputError("Arquivo grande demais (máximo 16 MB).")
        sniffed = sniff_audio_type(audio[:96])
        fmt = FORMATS.get(sniffed or "")
        if fmt is None:
            raise SimulatorInputError("Esse arquivo não parece ser um áudio (OGG, MP3, WAV, M4A, AAC, AMR, WebM).")
        name = f"{secrets.token_urlsafe(18)}{fmt.suffix}"
        folder = uploads_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(audio)
        media_url, media_type, kind = UPLOAD_SCHEME + name, fmt.mime, "audio"
    return Inbound(
        sid="SIM" + secrets.token_hex(16), phone=simulator_phone(session_key), wa_id=None,
        profile_name=profile_name, body=text, kind=kind, media_url=media_url, media_type=media_type,
        num_media=1 if audio else 0,
    )
