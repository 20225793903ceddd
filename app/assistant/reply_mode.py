"""How a user wants to be answered: by text, by voice, or like they wrote (``auto``)."""
from __future__ import annotations

REPLY_MODES = ("text", "audio", "auto")
REPLY_MODE_LABELS = {
    "text": "texto",
    "audio": "áudio",
    "auto": "automática (áudio quando a pessoa manda áudio, texto nos outros casos)",
}


def voice_reply_due(reply_mode: str, has_voice_note: bool) -> bool:
    """A voice reply is due when the user asked for audio, or sent a voice note in ``auto`` mode."""
    return reply_mode == "audio" or (reply_mode == "auto" and has_voice_note)
