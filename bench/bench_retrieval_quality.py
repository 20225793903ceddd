"""Retrieval quality: hit@1 and hit@3 of BM25, embeddings and their fusion over a labelled question set.

    python bench/bench_retrieval_quality.py [--split all|dev|heldout] [--misses]

The knowledge base is documents/*.md chunked as the app chunks it; the questions are
tests/data/retrieval_questions.json (WhatsApp-style Portuguese, each labelled with the sections
that answer it; see app/knowledge/evaluation.py). Three rankers, through
``KnowledgeBase.ranked_chunks`` (the code ``search`` runs):
- BM25 alone (what offline mode and a provider outage get);
- embeddings alone (cosine top-k);
- fusion: both, by reciprocal rank fusion (what ``search`` returns in hybrid mode).

Embeddings, twice when possible:
- emulated: the OpenAI emulator's deterministic bag-of-words vectors
  (tests/fakes/openai_fake.py ``embed``, 1536 dims) of what create_embeddings.py sends
  (heading + text) and of the raw question: shared surface words only, no meaning. Always runs;
- real: when OPENAI_API_KEY is set and documents/knowledge_vectors.json exists, the app's own
  KnowledgeBase over that file, embedding each question with the configured model (one API
  call per question; needs the network, so it never runs in CI or here).

hit@k: the share of questions for which one of the first k chunks comes from a section that
answers it. The held-out split was set aside when the questions were written: tune on dev,
look at held-out at the end.

Then the cost of reading typos: BM25 latency on 10,000 synthetic chunks (bench_retrieval.py's)
for queries of known words, for the same queries with one typo in each word (every word then
goes through ``one_typo_away`` and ~50 x len vocabulary look-ups), and for 300-word messages of
unknown words (only the first ``MAX_TYPO_WORDS`` are read). Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.knowledge import (  # noqa: E402
    MAX_TYPO_WORDS,
    KnowledgeBase,
    bm25_ranking,
    chunk_documents,
    embedding_input,
    tokenize,
)
from app.knowledge.evaluation import load_questions, measure  # noqa: E402
from bench.bench_retrieval import synthetic_chunks, vocabulary  # noqa: E402
from tests.fakes.openai_fake import EMBEDDING_DIMS  # noqa: E402
from tests.fakes.openai_fake import embed as emulated_embedding  # noqa: E402

DOCUMENTS = ROOT / "documents"
QUESTIONS = ROOT / "tests" / "data" / "retrieval_questions.json"
MODEL = "text-embedding-3-small"
RANKERS = (("BM25", ("bm25",)), ("embeddings", ("embeddings",)), ("fusion (RRF)", ("embeddings", "bm25")))


class EmulatedEmbeddings:
    """A gateway returning the OpenAI emulator's vectors, computed in-process (no HTTP to count)."""

    available = True

    def __init__(self, dims: int):
        self.dims = dims

    def embed(self, texts, model=None, *, timeout=None, max_retries=None):
        return np.vstack([emulated_embedding(text, self.dims) for text in texts])


def emulated_kb() -> KnowledgeBase:
    """The shipped documents with emulated vectors, as create_embeddings.py would write them."""
    gateway = EmulatedEmbeddings(EMBEDDING_DIMS[MODEL])
    chunks = chunk_documents(DOCUMENTS)
    embeddings = gateway.embed([embedding_input(c) for c in chunks])
    return KnowledgeBase.from_chunks(chunks, embeddings, model=MODEL, gateway=gateway)


def real_kb() -> KnowledgeBase | None:
    """The app's KnowledgeBase over documents/knowledge_vectors.json with real query embeddings,
    or None when there is no key or no vector file."""
    if not os.environ.get("OPENAI_API_KEY") or not (DOCUMENTS / "knowledge_vectors.json").is_file():
        return None
    from app.clients.openai_client import OpenAIGateway  # the OpenAI SDK, only when it is used
    from app.config import Settings

    settings = Settings.from_env(documents_dir=str(DOCUMENTS))
    base = KnowledgeBase.for_settings(settings, OpenAIGateway(settings))
    if base.mode != "hybrid":
        print(f"real embeddings unusable: {base.status()['note'] or base.status()['last_error']}")
        return None
    return base


def typo_latency(n: int = 10_000, queries: int = 300) -> dict:
    """p50 ms of ``bm25_ranking`` for 3-word queries of known words, and for the same with one typo per word."""
    rng = np.random.default_rng(2026)
    words = vocabulary(rng)
    base = KnowledgeBase.from_chunks(synthetic_chunks(rng, words, n))
    bm25 = base._current().bm25  # the index search uses (private access: this is a benchmark)
    known = [w for w in words[:2000] if len(w) >= 6 and w.isalpha() and len(tokenize(w)) == 1
             and tokenize(w)[0] in bm25.vocab_dict]
    clean, typos = [], []
    for _ in range(queries):
        picked = [str(w) for w in rng.choice(known, size=3)]
        clean.append(" ".join(picked))
        typos.append(" ".join(w[:2] + w[3:] for w in picked))  # a letter dropped: not in the index
    # A long coalesced turn of words the index lacks: only MAX_TYPO_WORDS of them are read.
    long_unknown = [" ".join(str(w)[:2] + str(w)[3:] + "q" for w in rng.choice(known, size=300))
                    for _ in range(queries // 10)]
    depth = 20
    out = {"n": n, "vocabulary": len(bm25.vocab_dict)}
    for name, texts in (("clean", clean), ("typos", typos), ("long", long_unknown)):
        for text in texts[:20]:
            bm25_ranking(bm25, text, depth)  # warm-up
        samples = []
        for text in texts:
            start = time.perf_counter()
            bm25_ranking(bm25, text, depth)
            samples.append((time.perf_counter() - start) * 1000)
        out[name] = statistics.median(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("all", "dev", "heldout"), default="all",
                        help="which questions to measure (default: dev, held-out and both)")
    parser.add_argument("--misses", action="store_true", help="list the questions each ranker misses at 3")
    args = parser.parse_args()
    questions = load_questions(QUESTIONS)
    splits = {"dev": [q for q in questions if q.split == "dev"],
              "held-out": [q for q in questions if q.split == "heldout"], "all": questions}
    if args.split != "all":
        splits = {name: qs for name, qs in splits.items() if name.replace("-", "") == args.split}
    started = time.perf_counter()

    bases = [("emulated (bag of words)", emulated_kb())]
    real = real_kb()
    if real is not None:
        bases.append((f"real ({real.embedding_model})", real))
    else:
        print("real embeddings: skipped (needs OPENAI_API_KEY and documents/knowledge_vectors.json)")
    print(f"{bases[0][1].chunk_count} chunks; {len(questions)} questions "
          f"({len(splits.get('dev', []))} dev, {len(splits.get('held-out', []))} held-out)\n")

    header = " | ".join(f"{name} hit@1 | {name} hit@3" for name in splits)
    print(f"| ranker | embeddings | {header} |")
    print("|---|---|" + "---:|---:|" * len(splits))
    misses = []
    for label, base in bases:
        for ranker, names in RANKERS:
            if ranker == "BM25" and label != bases[0][0]:
                continue  # BM25 does not depend on the embeddings: one row is enough
            cells = []
            for split, qs in splits.items():
                quality = measure(lambda q, k, base=base, names=names: base.ranked_chunks(q, k, names), qs)
                cells.append(f"{quality.hit_at_1:.0%} ({quality.hits_at_1}/{quality.total}) | "
                             f"{quality.hit_at_3:.0%} ({quality.hits_at_3}/{quality.total})")
                if split == list(splits)[-1]:
                    misses.append((f"{ranker}, {label}", quality.missed_at_3))
            print(f"| {ranker} | {'—' if ranker == 'BM25' else label} | {' | '.join(cells)} |")
    if args.misses:
        for name, missed in misses:
            print(f"\nmissed at 3 by {name} ({len(missed)}):")
            for question in missed:
                print(f"  - {question}")

    latency = typo_latency()
    print(f"\nBM25 latency, {latency['n']:,} synthetic chunks ({latency['vocabulary']:,} terms), "
          "ms p50\n")
    print("| queries | p50 ms |")
    print("|---|---:|")
    print(f"| 3 known words | {latency['clean']:.3f} |")
    print(f"| 3 words, one typo each | {latency['typos']:.3f} |")
    print(f"| 300 unknown words (the first {MAX_TYPO_WORDS} read for typos) | {latency['long']:.3f} |")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
