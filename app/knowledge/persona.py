"""The persona (documents/persona.md): read, comments stripped, re-read when it changes; never indexed."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from app.knowledge.chunking import PERSONA_FILENAME, DocumentError, read_source, stat_key, strip_comments

log = logging.getLogger("app.knowledge")


# Used only when documents/persona.md is missing, so the assistant still answers politely.
DEFAULT_PERSONA = """## Core

Você é o assistente virtual da Endrigo Digital no WhatsApp.

## Style

Responda em português do Brasil, em mensagens curtas e cordiais.

## Context

{context}

{profile}

Data e hora atuais: {datetime}

## Behavior

Responda apenas com informações da base de conhecimento; não invente preços nem fatos.
Se não souber, ofereça falar com uma pessoa da equipe (request_human_handoff).
"""

_persona_cache: dict[str, tuple[tuple[int, int], str]] = {}
_persona_lock = threading.Lock()


def load_persona(documents_dir: str | os.PathLike) -> str:
    """The persona instructions (persona.md without HTML comments), re-read when the file changes.

    Placeholders ``{context}``, ``{profile}`` and ``{datetime}`` are left for the caller to fill.
    """
    path = Path(documents_dir) / PERSONA_FILENAME
    key = stat_key(path)
    if key is None:
        log.warning("knowledge: %s not found; using a minimal built-in persona", path)
        return DEFAULT_PERSONA
    with _persona_lock:
        cached = _persona_cache.get(str(path))
        if cached is not None and cached[0] == key:
            return cached[1]
    try:
        text = strip_comments(read_source(path)).strip() + "\n"
    except DocumentError as exc:
        log.warning("knowledge: %s; using a minimal built-in persona", exc)
        return DEFAULT_PERSONA
    with _persona_lock:
        _persona_cache[str(path)] = (key, text)
    return text
