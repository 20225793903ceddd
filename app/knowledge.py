"""The knowledge base: chunking, the vector-file format, and hybrid retrieval.

One module owns the format of ``documents/knowledge_vectors.json`` so that the indexing
script (``create_embeddings.py``) and the app can never disagree about it.

- Chunking: heading-aware Markdown chunks of at most ~450 estimated tokens with ~50 tokens
  of overlap; every chunk carries its heading path ("Serviços > Tráfego pago"), a stable id
  ``source#index`` and a content hash (sha256 of heading + text).
- Format: ``{"format": 1, "model", "dimensions", "created_at", "chunks": [{"id", "source",
  "heading", "text", "hash", "embedding"}]}``, written atomically.
- Run time: parsing a JSON file of 10k x 1536 floats takes seconds and hundreds of MiB per
  process, so the app loads a binary sidecar next to it (normalised float32 matrix as .npy,
  memory-mapped and therefore shared between gunicorn workers through the page cache, plus
  the BM25 index) and regenerates it when the JSON changes. A read-only folder only costs
  the parse.
- Retrieval: cosine top-k by one matrix product plus BM25 (bm25s), fused by reciprocal rank
  fusion. Without usable embeddings (no key, provider error, no file, other model) it falls
  back to BM25 alone over chunks read straight from ``documents/*.md``, so a fresh checkout
  answers in offline mode.

The persona (``documents/persona.md``) lives next to the knowledge but is never indexed;
``load_persona`` reads it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from app.pipeline.context import Passage

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
VECTORS_FILENAME = "knowledge_vectors.json"
PERSONA_FILENAME = "persona.md"
SOURCE_SUFFIXES = (".md", ".txt")

MAX_CHUNK_TOKENS = 450
OVERLAP_TOKENS = 50
RRF_K = 60
MAX_QUERY_CHARS = 8000  # ~2,000 tokens, far below the embeddings input limit (8,192)
RELOAD_CHECK_SECONDS = 2.0
ERROR_LOG_INTERVAL_SECONDS = 60.0
# A query embedding inside a turn fails fast (then BM25 alone answers) instead of eating the turn's budget.
QUERY_EMBEDDING_TIMEOUT_SECONDS = 2.0

# Bump when the tokenizer or the sidecar layout changes: old sidecars then stop matching.
TOKENIZER_VERSION = 1
SIDECAR_FORMAT = 1
# Bytes hashed from each end of the JSON file for the sidecar key (see ``_sidecar_key``).
_KEY_SAMPLE_BYTES = 64 * 1024


class DocumentError(Exception):
    """A knowledge source cannot be read; the message names the file."""


class VectorFileError(ValueError):
    """``knowledge_vectors.json`` is not a valid vector file; the message says why."""


# ---------------------------------------------------------------------------------------
# Chunks and chunking
# ---------------------------------------------------------------------------------------

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
    """Split a paragraph bigger than ``limit`` tokens at sentence ends, then at words."""
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
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
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


# ---------------------------------------------------------------------------------------
# Tokenizer for BM25 (Portuguese-aware, tiny)
# ---------------------------------------------------------------------------------------

def fold(text: str) -> str:
    """Lower case without accents: "Serviços" -> "servicos" (users often type without accents).

    Decompose, then keep ASCII: the accents go, and so would other non-ASCII letters, which
    the tokenizer ignores anyway. (Much faster than filtering characters one by one.)
    """
    return unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")


# Function words and greetings, accent-free; they match everything and mean nothing here.
PORTUGUESE_STOPWORDS = frozenset("""
a o as os um uma uns umas de do da dos das em no na nos nas num numa por pelo pela pelos pelas
para pra pro com sem e ou que se ao aos mas nem como quando onde qual quais quanto quanta
quantos quantas quem cujo eu tu ele ela eles elas voce voces nos vos me te lhe lhes meu minha
meus minhas teu tua seu sua seus suas nosso nossa nossos nossas isso isto aquilo esse essa esses
essas este esta estes estas aquele aquela aqueles aquelas ser sou e era eram foi foram sao estar
estou esta estao estava ter tem tenho tinha ha havia ja nao sim so tambem muito muita muitos
muitas mais menos ate sobre entre apos antes depois ainda entao todo toda todos todas cada
outro outra outros outras mesmo mesma algum alguma alguns algumas nenhum nenhuma
oi ola obrigado obrigada por favor the of and to
""".split())

_TOKEN = re.compile(r"[a-z0-9]+")
# Plural endings, checked in order: "automações" -> "automacao", "digitais" -> "digital",
# "mensagens" -> "mensagem", "valores" -> "valor"; otherwise a final "s" is dropped.
_PLURALS = (("oes", "ao"), ("ais", "al"), ("eis", "el"), ("ns", "m"), ("res", "r"), ("zes", "z"))


def _singular(word: str) -> str:
    """Reduce a Portuguese plural so "serviços" finds "serviço" (a light RSLP-style step)."""
    if len(word) <= 3 or not word.endswith("s"):
        return word
    for suffix, replacement in _PLURALS:
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + replacement
    if word.endswith(("ss", "us", "is")):  # singular already: "bônus", "lápis", "tênis"
        return word
    return word[:-1]


def tokenize(text: str) -> list[str]:
    """BM25 tokens: folded words, stopwords dropped, plurals reduced."""
    return [_singular(word) for word in _TOKEN.findall(fold(text)) if word not in PORTUGUESE_STOPWORDS]


# ---------------------------------------------------------------------------------------
# Ranking: dense top-k, BM25 top-k, reciprocal rank fusion
# ---------------------------------------------------------------------------------------

def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first: argpartition, then sort only those k."""
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        candidates = np.argpartition(-scores, k - 1)[:k]
    else:
        candidates = np.arange(n)
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order]


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32), so a dot product is the cosine."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked lists of document indices: score(d) = sum over lists of 1 / (k + rank), rank from 1.

    Ties go to the document with the best single rank, then the smaller index (deterministic).
    """
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking in rankings:
        # Plain ints: numpy scalars make every dict operation below several times slower.
        ranking = ranking.tolist() if isinstance(ranking, np.ndarray) else ranking
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
            if rank < best_rank.get(doc, rank + 1):
                best_rank[doc] = rank
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))


def _bm25s():
    """bm25s, imported on first use; it sets its own logger to DEBUG on import, which we undo."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def build_bm25(chunks: Sequence[Chunk]):
    """A bm25s index over the chunks' heading + text, or None for an empty knowledge base."""
    if not chunks:
        return None
    bm25s = _bm25s()  # imported here: the index is built once per load, not at import time

    # An empty token list would confuse bm25s' corpus type detection; a sentinel matches nothing.
    corpus = [tokenize(embedding_input(chunk)) or ["\x00"] for chunk in chunks]
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    return retriever


def bm25_ranking(retriever, query: str, depth: int) -> np.ndarray:
    """Indices of the chunks matching at least one query term, best first (at most ``depth``)."""
    if retriever is None:
        return np.zeros(0, dtype=np.int64)
    ids = retriever.get_tokens_ids(tokenize(query))
    if not ids:
        return np.zeros(0, dtype=np.int64)
    scores = retriever.get_scores_from_ids(ids)
    best = top_k_indices(scores, depth)
    return best[scores[best] > 0]


# ---------------------------------------------------------------------------------------
# The vector file (JSON exchange format)
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# The binary sidecar (run time)
# ---------------------------------------------------------------------------------------

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
            bm25 = _bm25s().BM25.load(str(folder / "bm25"), mmap=True, show_progress=False)
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


# ---------------------------------------------------------------------------------------
# Distinctive terms (for the transcription prompt)
# ---------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_SENTENCES = re.compile(r"(?<=[.!?:])\s+|\n+")
_CLAUSES = re.compile(r"[,;()\[\]\"“”/>]|\s[-–—]\s")


def _capitalised(word: str) -> bool:
    return (word[0].isupper() or any(ch.isupper() for ch in word[1:])) and fold(word) not in PORTUGUESE_STOPWORDS


def _always_a_name(word: str) -> bool:
    """Mixed case (WhatsApp, LinkedIn) or an acronym (CRM): a name wherever it stands."""
    mixed = any(ch.isupper() for ch in word[1:]) and any(ch.islower() for ch in word)
    return mixed or (len(word) >= 2 and word.isupper())


def _name_runs(clause: str, sentence_start: bool) -> Iterable[str]:
    """Runs of capitalised words in a clause ("Google Ads"); a lone capitalised word opening a
    sentence is only grammar ("Depois vem ...") and is skipped."""
    words = _WORD.findall(clause)
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and _capitalised(words[j]):
            j += 1
        if j == i:
            i += 1
            continue
        run = words[i:j]
        if not (sentence_start and i == 0 and len(run) == 1 and not _always_a_name(run[0])):
            yield " ".join(run)
        i = j


def distinctive_terms(texts: Iterable[str], limit: int = 50) -> list[str]:
    """Names a transcriber could get wrong ("Endrigo Digital", "Google Ads", "WhatsApp"),
    most frequent first."""
    counts: Counter[str] = Counter()
    for text in texts:
        for sentence in _SENTENCES.split(text):
            for n, clause in enumerate(_CLAUSES.split(sentence)):
                counts.update(_name_runs(clause, sentence_start=n == 0))
    return [term for term, _ in counts.most_common(limit)]


# ---------------------------------------------------------------------------------------
# The knowledge base used by the app
# ---------------------------------------------------------------------------------------

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
        if not snapshot.chunks or not query or not query.strip() or k <= 0:
            return []
        depth = min(len(snapshot.chunks), max(4 * k, 20))
        rankings = []
        if snapshot.matrix is not None:
            vector = self._query_vector(query, snapshot)
            if vector is not None:
                rankings.append(top_k_indices(snapshot.matrix @ vector, depth))
        rankings.append(bm25_ranking(snapshot.bm25, query, depth))
        fused = reciprocal_rank_fusion([r for r in rankings if len(r)], k=RRF_K)[:k]
        return [self._passage(snapshot.chunks[i], score) for i, score in fused]

    @property
    def chunk_count(self) -> int:
        return len(self._current().chunks)

    @property
    def mode(self) -> str:
        """"hybrid" when queries can be embedded and matched against vectors, else "bm25"."""
        snapshot = self._current()
        return "hybrid" if snapshot.matrix is not None and self._can_embed() else "bm25"

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
        vectors = _stat_key(self.vectors_path)
        return (vectors, tuple((p.name, _stat_key(p)) for p in source_files(self.documents_dir)))

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
    def _passage(chunk: Chunk, score: float) -> "Passage":
        return _passage_class()(chunk_id=chunk.id, source=chunk.source, heading=chunk.heading, text=chunk.text,
                                score=float(score))


@functools.cache
def _passage_class():
    # Imported on first use: app.pipeline pulls in every stage and the OpenAI SDK (~1 s), which
    # the indexing script and the benchmark do not need.
    from app.pipeline.context import Passage

    return Passage


def _describe_embedding_error(exc: BaseException) -> str:
    try:
        from app.clients.openai_client import classify_openai_error

        return classify_openai_error(exc)[1]
    except Exception:  # classification must never break retrieval
        return type(exc).__name__


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


# ---------------------------------------------------------------------------------------
# The persona
# ---------------------------------------------------------------------------------------

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
    key = _stat_key(path)
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
