"""Retrieval benchmark: hybrid search latency against a bare numpy baseline, and index load time.

    python bench/bench_retrieval.py [--sizes 18,1000,10000,100000] [--load-size 10000]

For each size, synthetic chunks (random unit vectors of 1536 dims, Portuguese-like text with
a Zipf word distribution) are searched three ways in the same process:
- bare: one matrix product and an argpartition top-5 (the floor any vector search pays);
- BM25: ``bm25_ranking`` alone (tokenize, bm25s scores, top candidates);
- hybrid: ``KnowledgeBase.search`` (both rankings, RRF fusion, passages).
The query embedding is precomputed (a stub gateway hands it over), so no network is counted;
every query text is unique, so the query-embedding cache never hits.

Then a 10,000-chunk knowledge_vectors.json is written and loaded from JSON and from the
binary sidecar. Targets: hybrid p50 within 1.5x of (bare + BM25) and under 10 ms at 10k
chunks; load under 0.5 s. Prints Markdown tables. Runs in about a minute.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.knowledge import (  # noqa: E402  (after the path tweak, so the script runs from anywhere)
    Chunk,
    KnowledgeBase,
    bm25_ranking,
    build_vectors_file,
    chunk_documents,
    content_hash,
    load_runtime_index,
    save_vectors_file,
)

DIMS = 1536
TOP_K = 5
SYLLABLES = ("ca", "ra", "to", "me", "de", "li", "ção", "ma", "pa", "so", "ne", "ti", "va", "lo", "ro",
             "gem", "dor", "nha", "ri", "se", "bo", "te", "mu", "fa", "ção", "ões", "dá", "mí")


class PrecomputedGateway:
    """Hands out precomputed query vectors: the network is not what this benchmark measures."""

    available = True

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors
        self.calls = 0

    def embed(self, texts, model=None, *, timeout=None, max_retries=None):
        vector = self.vectors[self.calls % len(self.vectors)]
        self.calls += 1
        return vector[None, :]


def vocabulary(rng: np.random.Generator, size: int = 6000) -> list[str]:
    """Words of the sample knowledge base first (most frequent), then made-up Portuguese-like words."""
    words: list[str] = []
    seen: set[str] = set()
    for chunk in chunk_documents(Path(__file__).resolve().parent.parent / "documents"):
        for word in chunk.text.lower().split():
            word = word.strip(".,:;!?()\"“”")
            if word.isalpha() and word not in seen:
                seen.add(word)
                words.append(word)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def synthetic_texts(rng: np.random.Generator, words: list[str], n: int, length: int = 90) -> list[str]:
    ranks = np.arange(1, len(words) + 1)
    probabilities = (1.0 / ranks) / (1.0 / ranks).sum()  # Zipf: a few words are everywhere
    picks = rng.choice(len(words), size=(n, length), p=probabilities)
    return [" ".join(words[i] for i in row) + "." for row in picks]


def synthetic_chunks(rng, words, n: int) -> list[Chunk]:
    chunks = []
    for i, text in enumerate(synthetic_texts(rng, words, n)):
        heading = f"Seção {i // 10} > Tópico {i % 10}"
        chunks.append(Chunk(id=f"doc{i // 20}.md#{i % 20}", source=f"doc{i // 20}.md", heading=heading,
                            text=text, hash=content_hash(heading, text)))
    return chunks


def unit_vectors(rng, n: int) -> np.ndarray:
    matrix = rng.standard_normal((n, DIMS), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def queries(rng, words: list[str], n: int) -> list[str]:
    # 3-5 words from the frequent-to-medium part of the vocabulary, plus a number that makes
    # each text unique (so the query-embedding cache never short-cuts a measurement).
    pool = words[:2000]
    return [" ".join(rng.choice(pool, size=int(rng.integers(3, 6)))) + f" {i}" for i in range(n)]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def timed(fn, args_list) -> list[float]:
    out = []
    for args in args_list:
        start = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - start) * 1000)
    return out


def bare_top_k(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    scores = matrix @ vector
    best = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
    return best[np.argsort(-scores[best])]


def bench_size(n: int, words: list[str], rng) -> dict:
    chunks = synthetic_chunks(rng, words, n)
    embeddings = unit_vectors(rng, n)
    iterations = 300 if n <= 10_000 else 60
    qs = queries(rng, words, iterations)
    qvecs = unit_vectors(rng, iterations)

    start = time.perf_counter()
    base = KnowledgeBase.from_chunks(chunks, embeddings, gateway=PrecomputedGateway(qvecs))
    build_s = time.perf_counter() - start
    # The very matrix and BM25 index that search uses (private access: this is a benchmark).
    snapshot = base._current()
    depth = min(n, max(4 * TOP_K, 20))

    for i in range(min(20, iterations)):  # warm-up: caches, lazy imports, BLAS threads
        bare_top_k(snapshot.matrix, qvecs[i])
        bm25_ranking(snapshot.bm25, qs[i], depth)
        base.search(qs[i] + " warm", k=TOP_K)
    base.gateway.calls = 0
    bare = timed(bare_top_k, [(snapshot.matrix, v) for v in qvecs])
    bm25 = timed(bm25_ranking, [(snapshot.bm25, q, depth) for q in qs])
    hybrid = timed(lambda q: base.search(q, k=TOP_K), [(q,) for q in qs])
    assert base.gateway.calls == iterations, "every hybrid query must embed (no cache hits)"
    return {"n": n, "build_s": build_s, "bare": percentiles(bare), "bm25": percentiles(bm25),
            "hybrid": percentiles(hybrid)}


def bench_load(n: int, words: list[str], rng) -> dict:
    chunks = synthetic_chunks(rng, words, n)
    embeddings = unit_vectors(rng, n)
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as folder:
        path = Path(folder) / "knowledge_vectors.json"
        start = time.perf_counter()
        save_vectors_file(path, build_vectors_file(chunks, embeddings, "text-embedding-3-small"))
        write_s = time.perf_counter() - start
        json_mib = path.stat().st_size / 2**20

        start = time.perf_counter()
        load_runtime_index(path, use_sidecar=False)
        json_s = time.perf_counter() - start

        start = time.perf_counter()
        load_runtime_index(path)  # parses, then writes the sidecar
        first_s = time.perf_counter() - start
        [folder_sidecar] = Path(folder).glob("knowledge_vectors.sidecar-*")
        sidecar_mib = sum(f.stat().st_size for f in folder_sidecar.rglob("*") if f.is_file()) / 2**20

        sidecar_runs = []
        for _ in range(5):
            start = time.perf_counter()
            index = load_runtime_index(path)
            sidecar_runs.append(time.perf_counter() - start)
        assert index.from_sidecar

        # What a worker pays at its first question: KnowledgeBase load (stat, sidecar) + one search.
        gateway = PrecomputedGateway(unit_vectors(rng, 1))
        start = time.perf_counter()
        base = KnowledgeBase(folder, gateway=gateway)
        base.search("horário de atendimento", k=TOP_K)
        first_search_s = time.perf_counter() - start
        assert base.status()["source"] == "vectors"
    return {"n": n, "write_s": write_s, "json_mib": json_mib, "json_s": json_s, "first_s": first_s,
            "sidecar_s": statistics.median(sidecar_runs), "sidecar_mib": sidecar_mib,
            "first_search_s": first_search_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="18,1000,10000,100000")
    parser.add_argument("--load-size", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    words = vocabulary(rng)
    started = time.perf_counter()

    # BLAS threads matter: on a busy 2-core machine a multi-threaded matrix product degrades badly.
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset (OpenBLAS default)')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = [bench_size(int(n), words, rng) for n in args.sizes.split(",")]
    print(f"\nSearch latency, top-{TOP_K}, {DIMS} dims, ms (p50 / p95); query embedding precomputed\n")
    print("| chunks | bare product top-k | BM25 | bare + BM25 (p50) | hybrid search "
          "| hybrid / (bare + BM25) | index build |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        floor = r["bare"][0] + r["bm25"][0]
        print(f"| {r['n']:,} | {r['bare'][0]:.2f} / {r['bare'][1]:.2f} | {r['bm25'][0]:.2f} / {r['bm25'][1]:.2f} "
              f"| {floor:.2f} | {r['hybrid'][0]:.2f} / {r['hybrid'][1]:.2f} | {r['hybrid'][0] / floor:.2f}x "
              f"| {r['build_s']:.2f} s |")

    load = bench_load(args.load_size, words, rng)
    print(f"\nIndex load, {load['n']:,} chunks (JSON {load['json_mib']:.0f} MiB, written in {load['write_s']:.1f} s; "
          f"sidecar {load['sidecar_mib']:.0f} MiB)\n")
    print("| path | seconds |")
    print("|---|---:|")
    print(f"| JSON: parse + normalise + BM25 build (no sidecar) | {load['json_s']:.2f} |")
    print(f"| first load: the same + write the sidecar | {load['first_s']:.2f} |")
    print(f"| sidecar: memory-mapped matrix + BM25 index (median of 5) | {load['sidecar_s']:.3f} |")
    print(f"| new KnowledgeBase from the sidecar + first search | {load['first_search_s']:.3f} |")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
