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
look at held-out at the end. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.knowledge import KnowledgeBase, chunk_documents, embedding_input  # noqa: E402
from app.knowledge.evaluation import load_questions, measure  # noqa: E402
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
    print(f"\ntotal benchmark time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
