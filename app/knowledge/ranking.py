"""Ranking: dense top-k by one matrix product, BM25 (bm25s), reciprocal rank fusion."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from app.knowledge.chunking import Chunk, embedding_input
from app.knowledge.text import MIN_TYPO_LENGTH, one_typo_away, tokenize

RRF_K = 60


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


def import_bm25s():
    """bm25s, imported on first use; it sets its own logger to DEBUG on import, which we undo."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def bm25_tokens(chunk: Chunk) -> list[str]:
    """What BM25 indexes for a chunk: heading path and text, plus the section's own heading once
    more. A section's title is what it is about ("Privacidade", "Quanto custa?"); counting it
    twice raised hit@1 on the question set (docs/PERFORMANCE.md), more did not."""
    title = chunk.heading.rsplit(" > ", 1)[-1] if chunk.heading else ""
    return tokenize(embedding_input(chunk)) + tokenize(title)


def build_bm25(chunks: Sequence[Chunk]):
    """A bm25s index over the chunks' ``bm25_tokens``, or None for an empty knowledge base."""
    if not chunks:
        return None
    bm25s = import_bm25s()  # imported here: the index is built once per load, not at import time

    # An empty token list would confuse bm25s' corpus type detection; a sentinel matches nothing.
    corpus = [bm25_tokens(chunk) or ["\x00"] for chunk in chunks]
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    return retriever


def bm25_ranking(retriever, query: str, depth: int) -> np.ndarray:
    """Indices of the chunks matching at least one query term, best first (at most ``depth``)."""
    if retriever is None:
        return np.zeros(0, dtype=np.int64)
    ids = query_token_ids(retriever, tokenize(query))
    if not ids:
        return np.zeros(0, dtype=np.int64)
    scores = retriever.get_scores_from_ids(ids)
    best = top_k_indices(scores, depth)
    return best[scores[best] > 0]


# Reading a typo costs ~0.07 ms (bench/bench_retrieval_quality.py); a long coalesced turn can
# hold hundreds of unknown words, and has enough known ones anyway.
MAX_TYPO_WORDS = 8


def query_token_ids(retriever, tokens: Sequence[str]) -> list[int]:
    """Vocabulary ids of the query tokens; a word the index does not know is read as the known
    word one typo away that most chunks contain ("orario" -> "horario", "instagran" ->
    "instagram"), or dropped when there is none. Users type fast on a phone keyboard. Only the
    first ``MAX_TYPO_WORDS`` distinct unknown words are looked at."""
    vocabulary = retriever.vocab_dict
    ids = []
    corrections: dict[str, int | None] = {}
    for token in tokens:
        if token in vocabulary:
            ids.append(vocabulary[token])
            continue
        if token not in corrections:
            if len(corrections) >= MAX_TYPO_WORDS or len(token) < MIN_TYPO_LENGTH or not token.isalpha():
                continue
            corrections[token] = _typo_correction(retriever, token)
        if corrections[token] is not None:
            ids.append(corrections[token])
    return ids


def _typo_correction(retriever, token: str) -> int | None:
    """The id of the known term one typo away from ``token`` that most chunks contain, or None."""
    vocabulary = retriever.vocab_dict
    candidates = [vocabulary[c] for c in one_typo_away(token) if c in vocabulary]
    if not candidates:
        return None
    indptr = retriever.scores["indptr"]  # per term, where its list of chunks starts
    return max(candidates, key=lambda i: (indptr[i + 1] - indptr[i], -i))
