"""``documents/knowledge_vectors.json``: the exchange format shared by create_embeddings.py and the app."""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from app.knowledge.chunking import Chunk

FORMAT_VERSION = 1


class VectorFileError(ValueError):
    """``knowledge_vectors.json`` is not a valid vector file; the message says why."""


@dataclass
class VectorFile:
    """The parsed ``knowledge_vectors.json``: embeddings as stored (not normalised), row i = chunk i."""

    model: str
    dimensions: int
    created_at: str
    chunks: list[Chunk]
    embeddings: np.ndarray


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def build_vectors_file(chunks: Sequence[Chunk], embeddings: np.ndarray, model: str,
                       created_at: str | None = None) -> dict:
    """The JSON document for ``chunks`` and their embeddings (one row per chunk, in order)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(chunks) and (embeddings.ndim != 2 or embeddings.shape[0] != len(chunks)):
        raise VectorFileError(f"{len(chunks)} chunks but embeddings of shape {embeddings.shape}")
    if embeddings.size and not np.isfinite(embeddings).all():
        raise VectorFileError("embeddings contain NaN or infinity")
    dimensions = int(embeddings.shape[1]) if embeddings.ndim == 2 and len(chunks) else 0
    return {
        "format": FORMAT_VERSION,
        "model": model,
        "dimensions": dimensions,
        "created_at": created_at or utc_now_iso(),
        "chunks": [
            {"id": c.id, "source": c.source, "heading": c.heading, "text": c.text, "hash": c.hash,
             "embedding": embeddings[i]}
            for i, c in enumerate(chunks)
        ],
    }


def _format_floats(values: Any) -> str:
    # "%.9g" round-trips float32 exactly and is ~40% shorter (and faster) than json's float repr.
    return ",".join(["%.9g" % x for x in np.asarray(values, dtype=np.float32).tolist()])


def _write_vectors_json(handle, document: dict) -> None:
    """Stream the document: one chunk per line, so writing 10k chunks never builds one huge string."""
    header = {key: value for key, value in document.items() if key != "chunks"}
    handle.write(json.dumps(header, ensure_ascii=False)[:-1])
    handle.write(', "chunks": [')
    for i, chunk in enumerate(document.get("chunks", [])):
        fields = {key: value for key, value in chunk.items() if key != "embedding"}
        handle.write(",\n" if i else "\n")
        handle.write(json.dumps(fields, ensure_ascii=False)[:-1])
        handle.write(f', "embedding": [{_format_floats(chunk["embedding"])}]}}')
    handle.write("\n]}\n")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = False) -> None:
    """Write through a temporary file in the same folder, then ``os.replace``: readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mode = "wb" if binary else "w"
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8", "newline": "\n"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; other users (the app) must read it
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise


def save_vectors_file(path: str | os.PathLike, document: dict) -> None:
    """Write ``document`` (from ``build_vectors_file``) to ``path`` atomically."""
    atomic_write(path, lambda handle: _write_vectors_json(handle, document))


def _embedding_to_array(obj: dict) -> dict:
    # Converting each embedding while parsing frees its Python floats at once: the peak memory
    # of a 10k-chunk file drops from ~500 MiB of lists to about the size of the matrix.
    embedding = obj.get("embedding")
    if isinstance(embedding, list):
        obj["embedding"] = np.asarray(embedding, dtype=np.float32)
    return obj


def parse_vectors_json(data: bytes | str, origin: str = "knowledge_vectors.json") -> VectorFile:
    """Parse and validate the JSON text of a vector file."""
    try:
        document = json.loads(data, object_hook=_embedding_to_array)
    except (ValueError, TypeError) as exc:
        raise VectorFileError(f"{origin} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
        raise VectorFileError(f"{origin}: unknown format (expected \"format\": {FORMAT_VERSION})")
    try:
        model = str(document["model"])
        dimensions = int(document["dimensions"])
        records = document["chunks"]
        chunks = [Chunk(id=str(r["id"]), source=str(r["source"]), heading=str(r.get("heading", "")),
                        text=str(r["text"]), hash=str(r["hash"])) for r in records]
        rows = [np.asarray(r["embedding"], dtype=np.float32) for r in records]
    except (KeyError, TypeError, ValueError) as exc:
        raise VectorFileError(f"{origin}: malformed chunk ({type(exc).__name__}: {exc})") from None
    if any(row.shape != (dimensions,) for row in rows):
        raise VectorFileError(f"{origin}: an embedding does not have {dimensions} dimensions")
    embeddings = np.vstack(rows) if rows else np.zeros((0, dimensions), dtype=np.float32)
    return VectorFile(model=model, dimensions=dimensions, created_at=str(document.get("created_at", "")),
                      chunks=chunks, embeddings=embeddings)


def load_vectors_file(path: str | os.PathLike) -> VectorFile:
    """Read and validate a vector file (the slow, exact path; the app prefers the sidecar)."""
    path = Path(path)
    return parse_vectors_json(path.read_bytes(), path.name)
