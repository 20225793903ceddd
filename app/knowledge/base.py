"""``KnowledgeBase``: the app's thread-safe, self-reloading hybrid retrieval (BM25 alone when there are no embeddings)."""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from app.knowledge.chunking import VECTORS_FILENAME, Chunk, chunk_documents, source_files, stat_key
from app.knowledge.ranking import RRF_K, bm25_ranking, build_bm25, normalise_rows, reciprocal_rank_fusion, top_k_indices
from app.knowledge.sidecar import load_runtime_index
from app.knowledge.text import distinctive_terms
from app.turn import Passage

log = logging.getLogger("app.knowledge")

MAX_QUERY_CHARS = 8000  # ~2,000 tokens, far below the embeddings input limit (8,192)
RELOAD_CHECK_SECONDS = 2.0
ERROR_LOG_INTERVAL_SECONDS = 60.0
RANKERS = ("embeddings", "bm25")
# A query embedding inside a turn fails fast (then BM25 alone answers) instead of eating the turn's budget.
QUERY_EMBEDDING_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class _Snapshot:
    """One loaded version of the knowledge base; replaced whole on reload, so readers never lock."""

    chunks: tuple[Chunk, ...]
    matrix: np.ndarray | None
    bm25: Any
    model: str | None
    dimensions: int
    origin: str  # "vectors" (knowledge_vectors.json) | "documents" (*.md, BM25 only) | "memory"
    signature: tuple
    loaded_at: dt.datetime
    note: str = ""
    terms: list = field(default_factory=list, compare=False)


class _RateLimitedWarning:
    """Log a recurring problem at most once per interval, counting what was suppressed."""

    def __init__(self, interval: float = ERROR_LOG_INTERVAL_SECONDS):
        self.interval = interval
        self._last = -math.inf
        self._suppressed = 0
        self._lock = threading.Lock()

    def warn(self, message: str, *args: Any, exc_info: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        suffix = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
        log.warning(message + suffix, *args, exc_info=exc_info)


class KnowledgeBase:
    """Hybrid retrieval over the knowledge base; safe to share between threads.

    Loads lazily on first use, checks the files at most every ``check_interval`` seconds
    (two ``stat`` calls and a directory listing) and swaps in a new snapshot when they change.
    """

    def __init__(self, documents_dir: str | os.PathLike, *, embedding_model: str = "text-embedding-3-small",
                 gateway: Any = None, vectors_path: str | os.PathLike | None = None,
                 check_interval: float = RELOAD_CHECK_SECONDS, use_sidecar: bool = True):
        self.documents_dir = Path(documents_dir)
        self.vectors_path = Path(vectors_path) if vectors_path else self.documents_dir / VECTORS_FILENAME
        self.embedding_model = embedding_model
        self.gateway = gateway
        self.check_interval = check_interval
        self.use_sidecar = use_sidecar
        self._snapshot: _Snapshot | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._embed_warning = _RateLimitedWarning()
        self._reload_warning = _RateLimitedWarning()
        self.last_error: str | None = None

    @classmethod
    def for_settings(cls, settings, openai_gateway=None) -> "KnowledgeBase":
        return cls(settings.documents_dir, embedding_model=settings.openai_embedding_model,
                   gateway=openai_gateway)

    @classmethod
    def from_chunks(cls, chunks: Sequence[Chunk], embeddings: np.ndarray | None = None, *,
                    model: str = "text-embedding-3-small", gateway: Any = None) -> "KnowledgeBase":
        """An in-memory knowledge base that watches no files (benchmarks, unit tests of other stages)."""
        matrix = None if embeddings is None else normalise_rows(embeddings)
        if matrix is not None and matrix.shape[0] != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {matrix.shape[0]} embeddings")
        base = cls(Path("."), embedding_model=model, gateway=gateway, check_interval=math.inf)
        base._snapshot = _Snapshot(tuple(chunks), matrix, build_bm25(chunks), model if matrix is not None else None,
                                   matrix.shape[1] if matrix is not None else 0, "memory", (),
                                   dt.datetime.now(dt.timezone.utc))
        base._next_check = math.inf
        return base

    # -- public ------------------------------------------------------------------------
    def search(self, query: str, k: int = 5) -> list["Passage"]:
        """The ``k`` best passages for ``query``: cosine and BM25 rankings fused by RRF."""
        snapshot = self._current()
        return [self._passage(snapshot.chunks[i], score) for i, score in self._ranked(snapshot, query, k, RANKERS)]

    def ranked_chunks(self, query: str, k: int = 5, rankers: Sequence[str] = ("embeddings", "bm25")) -> list[Chunk]:
        """The ``k`` best chunks by the named rankers only ("embeddings", "bm25"; both, fused,
        is what ``search`` does): for measuring retrieval quality ranker by ranker."""
        unknown = set(rankers) - set(RANKERS)
        if unknown:
            raise ValueError(f"unknown rankers {sorted(unknown)}; known: {list(RANKERS)}")
        snapshot = self._current()
        return [snapshot.chunks[i] for i, _ in self._ranked(snapshot, query, k, rankers)]

    def _ranked(self, snapshot: _Snapshot, query: str, k: int, rankers: Sequence[str]) -> list[tuple[int, float]]:
        if not snapshot.chunks or not query or not query.strip() or k <= 0:
            return []
        depth = min(len(snapshot.chunks), max(4 * k, 20))
        rankings = []
        if "embeddings" in rankers and snapshot.matrix is not None:
            vector = self._query_vector(query, snapshot)
            if vector is not None:
                rankings.append(top_k_indices(snapshot.matrix @ vector, depth))
        if "bm25" in rankers:
            rankings.append(bm25_ranking(snapshot.bm25, query, depth))
        return reciprocal_rank_fusion([r for r in rankings if len(r)], k=RRF_K)[:k]

    @property
    def chunk_count(self) -> int:
        return len(self._current().chunks)

    @property
    def mode(self) -> str:
        """"hybrid" when queries can be embedded and matched against vectors, else "bm25"."""
        snapshot = self._current()
        return "hybrid" if snapshot.matrix is not None and self._can_embed() else "bm25"

    def subsections(self, source: str, heading: str) -> list[str]:
        """Titles of the sections directly under section ``heading`` of ``source``, in document
        order ("Serviços" -> ["Tráfego pago", "Redes sociais", ...]): what an overview lists."""
        prefix = f"{heading} > " if heading else ""
        titles: list[str] = []
        for chunk in self._current().chunks:
            if chunk.source != source or chunk.heading == heading or not chunk.heading.startswith(prefix):
                continue
            title = chunk.heading[len(prefix):]
            if " > " not in title and title not in titles:
                titles.append(title)
        return titles

    def vocabulary_terms(self, limit: int = 50) -> list[str]:
        """Distinctive names and terms of the knowledge base, for the transcription prompt."""
        snapshot = self._current()
        if not snapshot.terms and snapshot.chunks:
            # Once per snapshot. Two threads racing compute the same list; slice assignment
            # (unlike extend) cannot duplicate it. Bodies only: headings are labels, not names.
            snapshot.terms[:] = distinctive_terms(c.text for c in snapshot.chunks)
        return snapshot.terms[:limit]

    def status(self) -> dict:
        """For /health and the dashboard."""
        snapshot = self._current()
        return {
            "chunks": len(snapshot.chunks),
            "model": snapshot.model,
            "dims": snapshot.dimensions or None,
            "loaded_at": snapshot.loaded_at.isoformat(timespec="seconds"),
            "mode": self.mode,
            "source": snapshot.origin,
            "note": snapshot.note or None,
            "last_error": self.last_error,
        }

    def reload(self) -> None:
        """Forget the loaded snapshot: the next call loads again (tests, operators)."""
        if self._snapshot is not None and self._snapshot.origin == "memory":
            return  # nothing on disk to load from
        with self._lock:
            self._snapshot = None
            self._next_check = 0.0

    # -- loading ---------------------------------------------------------------------------
    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() < self._next_check:
            return snapshot
        # While one thread reloads, the others keep answering from the current snapshot.
        if not self._lock.acquire(blocking=snapshot is None):
            return snapshot
        try:
            snapshot = self._snapshot
            if snapshot is None or time.monotonic() >= self._next_check:
                # A vectors snapshot's signature is the first element only (see ``_load``).
                signature = self._signature()
                if snapshot is None or snapshot.signature not in (signature, signature[:1]):
                    snapshot = self._reload(snapshot, signature)
                self._next_check = time.monotonic() + self.check_interval
            return snapshot
        finally:
            self._lock.release()

    def _reload(self, current: _Snapshot | None, signature: tuple) -> _Snapshot:
        """Load a new snapshot; if that fails unexpectedly, keep answering from the current one."""
        try:
            self._snapshot = self._load(signature)
        except Exception:
            if current is None:
                raise
            self._reload_warning.warn("knowledge: reload failed; still serving the previous version", exc_info=True)
            return current
        return self._snapshot

    def _signature(self) -> tuple:
        """(vector file, sources): size and mtime of each; stat calls only, cheap every 2 s."""
        vectors = stat_key(self.vectors_path)
        return (vectors, tuple((p.name, stat_key(p)) for p in source_files(self.documents_dir)))

    def _load(self, signature: tuple) -> _Snapshot:
        now = dt.datetime.now(dt.timezone.utc)
        note = self._vectors_unusable_reason()
        if note is None:
            try:
                index = load_runtime_index(self.vectors_path, use_sidecar=self.use_sidecar)
            except (OSError, ValueError) as exc:
                note = f"cannot load {self.vectors_path.name}: {exc}"
            else:
                if index.model != self.embedding_model:
                    note = (f"{self.vectors_path.name} was built with {index.model}, settings ask for "
                            f"{self.embedding_model}: run `python create_embeddings.py --rebuild`")
                else:
                    log.info("knowledge: %d chunks from %s (%s, %d dims, %s)", len(index.chunks),
                             self.vectors_path.name, index.model, index.dimensions,
                             "sidecar" if index.from_sidecar else "parsed JSON")
                    # A vectors snapshot only watches the JSON file (sources change nothing until re-indexed).
                    return _Snapshot(tuple(index.chunks), index.matrix, index.bm25, index.model,
                                     index.dimensions, "vectors", signature[:1], now)
        chunks = chunk_documents(self.documents_dir, strict=False)
        log.warning("knowledge: BM25 only over %d chunks of %s (%s)", len(chunks), self.documents_dir, note)
        return _Snapshot(tuple(chunks), None, build_bm25(chunks), None, 0, "documents", signature, now, note)

    def _vectors_unusable_reason(self) -> str | None:
        if not self._can_embed():
            return "OPENAI_API_KEY is not set, so queries cannot be embedded"
        if not self.vectors_path.is_file():
            return f"{self.vectors_path.name} not found: run `python create_embeddings.py`"
        return None

    def _can_embed(self) -> bool:
        return bool(self.gateway is not None and getattr(self.gateway, "available", False))

    # -- query embedding -------------------------------------------------------------------
    def _query_vector(self, query: str, snapshot: _Snapshot) -> np.ndarray | None:
        """The normalised query embedding, or None (then this query is answered by BM25 alone)."""
        if not self._can_embed():
            return None
        cache_key = f"{snapshot.model}\n{query}"
        with self._cache_lock:
            cached = self._query_cache.get(cache_key)
            if cached is not None:
                self._query_cache.move_to_end(cache_key)
                return cached
        try:
            # A long coalesced turn could exceed the model's input limit; its start says enough.
            text = query[:MAX_QUERY_CHARS]
            embedded = self.gateway.embed([text], model=snapshot.model,
                                          timeout=QUERY_EMBEDDING_TIMEOUT_SECONDS, max_retries=0)
            vector = np.asarray(embedded, dtype=np.float32)[0]
        except Exception as exc:  # any provider failure degrades to BM25; the turn still gets an answer
            self.last_error = _describe_embedding_error(exc)
            self._embed_warning.warn("knowledge: query embedding failed, using BM25 only: %s", self.last_error)
            return None
        if vector.shape != (snapshot.dimensions,):
            got = vector.shape[-1] if vector.ndim else 0
            self.last_error = f"query embedding has {got} dims, index has {snapshot.dimensions}"
            self._embed_warning.warn("knowledge: %s; using BM25 only", self.last_error)
            return None
        vector = vector / (np.linalg.norm(vector) or 1.0)
        with self._cache_lock:
            # The same text is often searched twice in one turn (retrieval, then the tool).
            self._query_cache[cache_key] = vector
            if len(self._query_cache) > 256:
                self._query_cache.popitem(last=False)
        return vector

    @staticmethod
    def _passage(chunk: Chunk, score: float) -> Passage:
        return Passage(chunk_id=chunk.id, source=chunk.source, heading=chunk.heading, text=chunk.text,
                       score=float(score))


def _describe_embedding_error(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or type(exc).__name__
