"""Heading-aware chunking of documents/*.md into ``Chunk``s with stable ids and content hashes.

Markdown is reflowed first (``reflow_markdown``): the sources' hard line breaks are layout,
and a chunk's text goes as is into prompts and, through the model, into WhatsApp replies.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from app.knowledge.text import reflow_markdown

log = logging.getLogger("app.knowledge")

VECTORS_FILENAME = "knowledge_vectors.json"
PERSONA_FILENAME = "persona.md"
SOURCE_SUFFIXES = (".md", ".txt")
MAX_CHUNK_TOKENS = 450
OVERLAP_TOKENS = 50


class DocumentError(Exception):
    """A knowledge source cannot be read; the message names the file."""


@dataclass(frozen=True)
class Chunk:
    """A piece of a knowledge source, as indexed. ``heading`` is the path of headings above it."""

    id: str
    source: str
    heading: str
    text: str
    hash: str


def content_hash(heading: str, text: str) -> str:
    """sha256 of what gets embedded: the same heading and text always give the same hash."""
    return hashlib.sha256(f"{heading}\n{text}".encode("utf-8")).hexdigest()


def embedding_input(chunk: Chunk) -> str:
    """The text sent to the embeddings model (and indexed by BM25): heading path, then body.

    The heading carries meaning the body often leaves implicit ("Preços" over "sob consulta").
    """
    return f"{chunk.heading}\n\n{chunk.text}" if chunk.heading else chunk.text


def estimate_tokens(text: str) -> int:
    """Cheap token estimate: the larger of words x 1.3 and characters / 4 (no tokenizer needed)."""
    if not text:
        return 0
    return math.ceil(max(len(text.split()) * 1.3, len(text) / 4))


_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def strip_comments(text: str) -> str:
    """Remove HTML comments: they hold notes for editors (e.g. the SAMPLE banner), not knowledge."""
    return _HTML_COMMENT.sub("", text)


def _sections(text: str, markdown: bool) -> list[tuple[str, str]]:
    """Split a document into (heading path, body) pairs, in order; bodies may be empty."""
    if not markdown:
        return [("", text)]
    sections: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        sections.append((" > ".join(title for _, title in stack), "\n".join(body)))
        body.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence  # a "#" inside a code block is not a heading
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        flush()
        level = len(match.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, match.group(2).strip()))
    flush()
    return sections


def _split_long(unit: str, limit: int) -> list[str]:
    """Split a paragraph bigger than ``limit`` tokens at line ends (list items, table rows),
    then at sentence ends, then at words."""
    if "\n" in unit:
        pieces = []
        for line in unit.split("\n"):
            candidate = f"{pieces[-1]}\n{line}" if pieces else line
            if pieces and estimate_tokens(candidate) <= limit:
                pieces[-1] = candidate
            elif estimate_tokens(line) <= limit:
                pieces.append(line)
            else:
                pieces.extend(_split_long(line, limit))
        return pieces
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(unit):
        candidate = f"{current} {sentence}".strip()
        if estimate_tokens(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        current = ""
        if estimate_tokens(sentence) <= limit:
            current = sentence
            continue
        for word in sentence.split():  # one endless sentence: cut at words
            candidate = f"{current} {word}".strip()
            if current and estimate_tokens(candidate) > limit:
                pieces.append(current)
                candidate = word
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def _tail(text: str, tokens: int) -> str:
    """The last words of ``text`` worth about ``tokens`` tokens: the overlap carried forward."""
    words = text.split()
    taken: list[str] = []
    while words and estimate_tokens(" ".join(taken)) < tokens:
        taken.insert(0, words.pop())
    return " ".join(taken)


def _pack(body: str, max_tokens: int, overlap_tokens: int) -> list[str]:
    """Greedy packing of paragraphs into chunks of at most ``max_tokens``, with overlap."""
    # Only the ends' blank space goes: a leading indent is meaning (an indented code block).
    paragraphs = [p.lstrip("\n").rstrip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    # Units leave room for the overlap, so overlap + one unit always fits in a chunk.
    limit = max(1, max_tokens - overlap_tokens)
    units = [piece for p in paragraphs for piece in (_split_long(p, limit) if estimate_tokens(p) > limit else [p])]
    chunks: list[str] = []
    current: list[str] = []
    for unit in units:
        candidate = "\n\n".join([*current, unit])
        if current and estimate_tokens(candidate) > max_tokens:
            chunks.append("\n\n".join(current))
            overlap = _tail(chunks[-1], overlap_tokens) if overlap_tokens > 0 else ""
            current = [overlap] if overlap else []
        current.append(unit)
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def chunk_text(text: str, source: str, *, markdown: bool = True, max_tokens: int = MAX_CHUNK_TOKENS,
               overlap_tokens: int = OVERLAP_TOKENS) -> list[Chunk]:
    """Chunk one document. Sections never share a chunk, so every chunk has one heading path."""
    text = strip_comments(text.replace("\r\n", "\n").replace("\r", "\n"))
    if markdown:
        text = reflow_markdown(text)
    chunks: list[Chunk] = []
    for heading, body in _sections(text, markdown):
        for piece in _pack(body, max_tokens, overlap_tokens):
            chunks.append(Chunk(id=f"{source}#{len(chunks)}", source=source, heading=heading,
                                text=piece, hash=content_hash(heading, piece)))
    return chunks


def source_files(documents_dir: str | os.PathLike) -> list[Path]:
    """The knowledge sources: ``*.md`` and ``*.txt`` directly in the folder, sorted.

    Not indexed: persona.md (instructions, not knowledge) and names starting with "." or "_"
    (drafts, notes for editors).
    """
    folder = Path(documents_dir)
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir()
        if path.suffix.lower() in SOURCE_SUFFIXES
        and path.name.lower() != PERSONA_FILENAME
        and not path.name.startswith((".", "_"))
        and path.is_file()
    )


def read_source(path: Path) -> str:
    """Text of one source file; ``DocumentError`` names the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DocumentError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as exc:
        raise DocumentError(f"cannot read {path}: {exc.strerror or exc}") from None


def chunk_documents(documents_dir: str | os.PathLike, *, strict: bool = True) -> list[Chunk]:
    """Chunks of every source file. ``strict=False`` skips unreadable files with a warning (the app)."""
    chunks: list[Chunk] = []
    for path in source_files(documents_dir):
        try:
            text = read_source(path)
        except DocumentError as exc:
            if strict:
                raise
            log.warning("knowledge: skipping a source: %s", exc)
            continue
        chunks.extend(chunk_text(text, path.name, markdown=path.suffix.lower() == ".md"))
    return chunks


def stat_key(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)
