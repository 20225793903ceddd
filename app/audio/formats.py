"""One table of the audio formats we meet: container kind, MIME type, file suffix.

``sniff_audio_type`` recognises a container from its first bytes; everything else that
needs a MIME type or a suffix for a kind (or a kind for a suffix) reads ``FORMATS``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AudioFormat:
    kind: str  # what sniff_audio_type returns
    mime: str  # what WhatsApp/Twilio and OpenAI expect for it
    suffix: str  # a file extension FFmpeg and the transcription API recognise
    whatsapp: bool  # WhatsApp plays it as outbound audio (OGG/Opus, AMR, AAC, MPEG, MP4)
    transcribable: bool  # OpenAI's transcription endpoint takes it as it is


FORMATS: dict[str, AudioFormat] = {f.kind: f for f in (
    AudioFormat("opus", "audio/ogg", ".ogg", whatsapp=True, transcribable=True),
    AudioFormat("ogg", "audio/ogg", ".ogg", whatsapp=False, transcribable=True),
    AudioFormat("mp3", "audio/mpeg", ".mp3", whatsapp=True, transcribable=True),
    AudioFormat("wav", "audio/wav", ".wav", whatsapp=False, transcribable=True),
    AudioFormat("mp4", "audio/mp4", ".m4a", whatsapp=True, transcribable=True),
    AudioFormat("aac", "audio/aac", ".aac", whatsapp=True, transcribable=False),
    AudioFormat("amr", "audio/amr", ".amr", whatsapp=True, transcribable=False),
    AudioFormat("webm", "audio/webm", ".webm", whatsapp=False, transcribable=True),
    AudioFormat("flac", "audio/flac", ".flac", whatsapp=False, transcribable=True),
)}

# Spellings of the same type that clients send.
MIME_ALIASES = {"audio/mp3": "audio/mpeg", "audio/opus": "audio/ogg", "audio/x-wav": "audio/wav"}


def mime_for(kind: str | None) -> str | None:
    fmt = FORMATS.get(kind or "")
    return fmt.mime if fmt else None


def suffix_for(kind: str | None) -> str | None:
    fmt = FORMATS.get(kind or "")
    return fmt.suffix if fmt else None


def normal_mime(content_type: str | None) -> str:
    """``audio/OGG; codecs=opus`` -> ``audio/ogg``; aliases folded."""
    given = (content_type or "").split(";", 1)[0].strip().lower()
    return MIME_ALIASES.get(given, given)


def mime_for_suffix(suffix: str) -> str | None:
    """The MIME type of a suffix we know (``.ogg`` -> ``audio/ogg``)."""
    suffix = suffix.lower() if suffix.startswith(".") else "." + suffix.lower()
    for fmt in FORMATS.values():
        if fmt.suffix == suffix:
            return fmt.mime
    return None


def suffix_for_mime(content_type: str | None) -> str | None:
    """The suffix we store a MIME type under (``audio/mpeg`` -> ``.mp3``)."""
    mime = normal_mime(content_type)
    for fmt in FORMATS.values():
        if fmt.mime == mime:
            return fmt.suffix
    return None


def sniff_audio_type(head: bytes) -> str | None:
    """Recognise an audio container from its first bytes (32+ recommended, 64 for Opus).

    Returns one of ``opus`` (OGG with Opus), ``ogg`` (other OGG), ``mp3``, ``wav``, ``mp4``,
    ``aac`` (ADTS), ``amr``, ``webm`` (WebM/Matroska), ``flac``; ``None`` for anything else.
    """
    if len(head) < 4:
        return None
    if head.startswith(b"OggS"):
        # The first page carries the codec's identification header right after the
        # 27-byte page header and its segment table.
        return "opus" if b"OpusHead" in head[:96] else "ogg"
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[0] == 0xFF:
        second = head[1]
        # ADTS and MPEG audio share the 0xFFF sync word; the layer bits tell them apart:
        # ADTS always has layer 00, which MPEG audio reserves.
        if second & 0xF6 == 0xF0:
            return "aac"
        if second & 0xE0 == 0xE0 and (second >> 1) & 0x03 != 0:
            return "mp3"
    return None
