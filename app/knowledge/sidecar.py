"""The binary sidecar next to the vectors file: memory-mapped matrix + BM25 index, rebuilt when the JSON changes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.knowledge.chunking import Chunk
from app.knowledge.ranking import build_bm25, import_bm25s, normalise_rows
from app.knowledge.vector_file import parse_vectors_json

log = logging.getLogger("app.knowledge")

# Bump when the tokenizer, what BM25 indexes of a chunk, or the sidecar layout changes: old
# sidecars then stop matching. 2: abbreviations expanded, the section title counted twice.
TOKENIZER_VERSION = 2
SIDECAR_FORMAT = 1
# Bytes hashed from each end of the JSON file for the sidecar key (see ``_sidecar_key``).
_KEY_SAMPLE_BYTES = 64 * 1024


@dataclass
class RuntimeIndex:
    """What search needs, ready: chunks, the normalised matrix, the BM25 index."""

    model: str | None
    dimensions: int
    created_at: str
    chunks: list[Chunk]
    matrix: np.ndarray | None
    bm25: Any
    from_sidecar: bool = False


def sidecar_dir(vectors_path: Path, key: str) -> Path:
    """Sidecars live next to the JSON; the name matches .gitignore's ``documents/*.sidecar*``."""
    return vectors_path.parent / f"{vectors_path.stem}.sidecar-{key}"


def _sidecar_key(size: int, mtime_ns: int, head: bytes, tail: bytes) -> str:
    """Identity of one version of the JSON file, without hashing hundreds of MiB on every load:
    size and mtime catch edits; the sampled bytes (header with created_at, last chunks) catch a
    copy that kept the old mtime."""
    digest = hashlib.sha256(f"{SIDECAR_FORMAT}:{TOKENIZER_VERSION}:{size}:{mtime_ns}:".encode())
    digest.update(head)
    digest.update(tail)
    return digest.hexdigest()[:20]


def _read_key(handle) -> str:
    stat = os.fstat(handle.fileno())
    head = handle.read(_KEY_SAMPLE_BYTES)
    handle.seek(max(0, stat.st_size - _KEY_SAMPLE_BYTES))
    tail = handle.read(_KEY_SAMPLE_BYTES)
    handle.seek(0)
    return _sidecar_key(stat.st_size, stat.st_mtime_ns, head, tail)


def _load_sidecar(folder: Path, key: str):
    """The sidecar for ``key``, or None when absent or unusable (then the JSON is parsed)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("key") != key or meta.get("sidecar_format") != SIDECAR_FORMAT:
            return None
        chunks = [Chunk(**record) for record in meta["chunks"]]
        # A memory map: nothing is read until searched, and workers share the pages.
        matrix = np.asarray(np.load(folder / "vectors.npy", mmap_mode="r"))
        if matrix.dtype != np.float32 or matrix.shape != (len(chunks), int(meta["dimensions"])):
            return None
        bm25 = None
        if chunks:
            bm25 = import_bm25s().BM25.load(str(folder / "bm25"), mmap=True, show_progress=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("knowledge: ignoring an unusable sidecar %s (%s)", folder.name, type(exc).__name__)
        return None
    return RuntimeIndex(model=meta["model"], dimensions=int(meta["dimensions"]), created_at=meta["created_at"],
                        chunks=chunks, matrix=matrix, bm25=bm25, from_sidecar=True)


def _write_sidecar(vectors_path: Path, key: str, index: RuntimeIndex) -> None:
    """Publish the sidecar atomically: build it in a temporary folder, then rename the folder.

    Several workers may race to build the same sidecar; the first rename wins and the others
    discard their copy (the content is the same: it derives from the same JSON bytes).
    """
    final = sidecar_dir(vectors_path, key)
    tmp = Path(tempfile.mkdtemp(dir=vectors_path.parent, prefix=f"{final.name}.tmp-"))
    try:
        np.save(tmp / "vectors.npy", np.ascontiguousarray(index.matrix, dtype=np.float32))
        if index.bm25 is not None:
            index.bm25.save(str(tmp / "bm25"), show_progress=False)
        meta = {
            "sidecar_format": SIDECAR_FORMAT, "key": key, "source": vectors_path.name,
            "model": index.model, "dimensions": index.dimensions, "created_at": index.created_at,
            "chunks": [dataclasses.asdict(c) for c in index.chunks],
        }
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; other users (the app) must read it
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process published it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale_sidecars(vectors_path, keep=final.name)


def _remove_stale_sidecars(vectors_path: Path, keep: str) -> None:
    """Delete sidecars of older versions. A process still reading one keeps its memory map
    (POSIX keeps unlinked files alive); temporary folders of live writers are left alone."""
    for path in vectors_path.parent.glob(f"{vectors_path.stem}.sidecar-*"):
        if path.name == keep:
            continue
        if ".tmp-" in path.name:
            try:
                if time.time() - path.stat().st_mtime < 600:
                    continue
            except OSError:
                continue
        shutil.rmtree(path, ignore_errors=True)


_readonly_warned: set[str] = set()


def load_runtime_index(vectors_path: str | os.PathLike, *, use_sidecar: bool = True) -> RuntimeIndex:
    """Load the vector file for search: from the sidecar when it matches, else parse the JSON
    (and write the sidecar for next time; a read-only folder just skips that)."""
    vectors_path = Path(vectors_path)
    with open(vectors_path, "rb") as handle:
        key = _read_key(handle)
        if use_sidecar:
            cached = _load_sidecar(sidecar_dir(vectors_path, key), key)
            if cached is not None:
                return cached
        data = handle.read()  # the same open file the key was read from: key and content agree
    parsed = parse_vectors_json(data, vectors_path.name)
    del data
    index = RuntimeIndex(model=parsed.model, dimensions=parsed.dimensions, created_at=parsed.created_at,
                         chunks=parsed.chunks, matrix=normalise_rows(parsed.embeddings),
                         bm25=build_bm25(parsed.chunks))
    if use_sidecar:
        try:
            _write_sidecar(vectors_path, key, index)
        except OSError as exc:
            if str(vectors_path) not in _readonly_warned:
                _readonly_warned.add(str(vectors_path))
                log.warning("knowledge: cannot write the sidecar next to %s (%s); every start will parse "
                            "the JSON", vectors_path, exc.strerror or type(exc).__name__)
    return index
