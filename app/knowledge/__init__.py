"""The knowledge base: chunking, the vector-file format, and hybrid retrieval.

One package owns the format of ``documents/knowledge_vectors.json`` so that the indexing
script (``create_embeddings.py``) and the app can never disagree about it.

- Chunking: Markdown reflowed (hard-wrapped paragraphs joined, lists one item per line),
  then heading-aware chunks of at most ~450 estimated tokens with ~50 tokens
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
  fusion. BM25 tokens are folded (no accents), WhatsApp abbreviations expanded ("vcs", "zap"),
  stopwords dropped, plurals reduced; a query word the index lacks is read as the known word one
  typo away; a section's title counts twice. ``app.knowledge.evaluation`` measures hit@k over
  tests/data/retrieval_questions.json (bench/bench_retrieval_quality.py). Without usable
  embeddings (no key, provider error, no file, other model) it falls back to BM25 alone over
  chunks read straight from ``documents/*.md``, so a fresh checkout answers in offline mode.

The persona (``documents/persona.md``) lives next to the knowledge but is never indexed;
``load_persona`` reads it.
"""
from __future__ import annotations

from app.knowledge.base import (  # noqa: F401
    ERROR_LOG_INTERVAL_SECONDS,
    MAX_QUERY_CHARS,
    QUERY_EMBEDDING_TIMEOUT_SECONDS,
    RELOAD_CHECK_SECONDS,
    KnowledgeBase,
)
from app.knowledge.chunking import (  # noqa: F401
    MAX_CHUNK_TOKENS,
    OVERLAP_TOKENS,
    PERSONA_FILENAME,
    SOURCE_SUFFIXES,
    VECTORS_FILENAME,
    Chunk,
    DocumentError,
    chunk_documents,
    chunk_text,
    content_hash,
    embedding_input,
    estimate_tokens,
    read_source,
    source_files,
    stat_key,
    strip_comments,
)
from app.knowledge.persona import DEFAULT_PERSONA, load_persona  # noqa: F401
from app.knowledge.ranking import (  # noqa: F401
    MAX_TYPO_WORDS,
    RRF_K,
    bm25_ranking,
    bm25_tokens,
    build_bm25,
    import_bm25s,
    normalise_rows,
    query_token_ids,
    reciprocal_rank_fusion,
    top_k_indices,
)
from app.knowledge.sidecar import (  # noqa: F401
    SIDECAR_FORMAT,
    TOKENIZER_VERSION,
    RuntimeIndex,
    load_runtime_index,
    sidecar_dir,
)
from app.knowledge.text import (  # noqa: F401
    ABBREVIATIONS,
    PORTUGUESE_STOPWORDS,
    distinctive_terms,
    fold,
    one_typo_away,
    reflow_markdown,
    tokenize,
)
from app.knowledge.vector_file import (  # noqa: F401
    FORMAT_VERSION,
    VectorFile,
    VectorFileError,
    atomic_write,
    build_vectors_file,
    load_vectors_file,
    parse_vectors_json,
    save_vectors_file,
    utc_now_iso,
)
