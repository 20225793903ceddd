"""Retrieval quality does not regress: hit@1 and hit@3 over tests/data/retrieval_questions.json.

Measured on the frozen sample knowledge base (tests/knowledge/test_knowledge.py SAMPLE_KB, what
documents/ first shipped), so the figures hold when operators replace documents/. The floors
are the figures measured when they were set (docs/PERFORMANCE.md, bench/bench_retrieval_quality.py):
a change to chunking or ranking that loses a question fails here; one that wins questions
should raise the floor.

Embeddings are the OpenAI emulator's bag-of-words vectors (tests/fakes/openai_fake.py), which
share surface words and nothing else: with them the fusion is *worse* than BM25 alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.knowledge import KnowledgeBase, chunk_documents, embedding_input
from app.knowledge.evaluation import LabelledQuestion, first_hit_rank, load_questions, measure, section_label
from tests.fakes.openai_fake import embed as emulated_embedding
from tests.knowledge.test_knowledge import write_sample_kb

QUESTIONS = Path(__file__).resolve().parents[1] / "data" / "retrieval_questions.json"
DIMS = 1536  # text-embedding-3-small, as the emulator serves it

# Measured on 84 questions (59 dev, 25 held out); floors as fractions so that adding
# questions keeps them meaningful.
BM25_HIT_AT_1 = 60 / 84
BM25_HIT_AT_3 = 71 / 84
BM25_HELDOUT_HIT_AT_3 = 16 / 25
FUSION_HIT_AT_3 = 65 / 84


class EmulatedEmbeddings:
    """The emulator's vectors, in-process: what the app gets against tests/fakes/openai_fake.py."""

    available = True

    def embed(self, texts, model=None, *, timeout=None, max_retries=None):
        return np.vstack([emulated_embedding(text, DIMS) for text in texts])


@pytest.fixture(scope="module")
def questions():
    return load_questions(QUESTIONS)


@pytest.fixture(scope="module")
def sample_chunks(tmp_path_factory):
    return chunk_documents(write_sample_kb(tmp_path_factory.mktemp("sample") / "documents"))


@pytest.fixture(scope="module")
def base(sample_chunks):
    gateway = EmulatedEmbeddings()
    embeddings = gateway.embed([embedding_input(c) for c in sample_chunks])
    return KnowledgeBase.from_chunks(sample_chunks, embeddings, gateway=gateway)


def quality(base, questions, rankers):
    return measure(lambda question, k: base.ranked_chunks(question, k, rankers), questions)


def test_the_question_set_is_labelled_with_real_sections(questions, sample_chunks):
    sections = {section_label(c) for c in sample_chunks}
    assert len(questions) >= 60
    assert [(q.question, a) for q in questions for a in q.answers if a not in sections] == []
    assert sections == {q.answers[0] for q in questions}  # every section is the answer to something
    heldout = [q for q in questions if q.split == "heldout"]
    assert 0.25 <= len(heldout) / len(questions) <= 0.4
    assert len({q.question for q in questions}) == len(questions)


def test_hits_count_the_first_chunk_of_an_answering_section(sample_chunks):
    privacy = next(c for c in sample_chunks if c.heading.endswith("Privacidade"))
    price = next(c for c in sample_chunks if c.heading.endswith("Quanto custa?"))
    answers = (section_label(privacy),)
    assert first_hit_rank([price, privacy], answers) == 2
    assert first_hit_rank([price], answers) is None
    quality_of = measure(lambda q, k: [price, privacy][:k], [LabelledQuestion("q", answers, "dev")])
    assert (quality_of.hits_at_1, quality_of.hits_at_3, quality_of.missed_at_3) == (0, 1, ())


def test_bm25_does_not_lose_questions(base, questions):
    bm25 = quality(base, questions, ("bm25",))
    assert bm25.hit_at_1 >= BM25_HIT_AT_1, bm25
    assert bm25.hit_at_3 >= BM25_HIT_AT_3, bm25.missed_at_3
    heldout = quality(base, [q for q in questions if q.split == "heldout"], ("bm25",))
    assert heldout.hit_at_3 >= BM25_HELDOUT_HIT_AT_3, heldout.missed_at_3


def test_fusion_rescues_the_emulated_embeddings(base, questions):
    dense = quality(base, questions, ("embeddings",))
    fused = quality(base, questions, ("embeddings", "bm25"))
    assert fused.hit_at_3 >= FUSION_HIT_AT_3, fused.missed_at_3
    assert fused.hits_at_3 > dense.hits_at_3  # BM25 brings what bag-of-words vectors miss


@pytest.mark.xfail(strict=True, reason="with the emulator's bag-of-words vectors the fusion loses questions "
                   "BM25 finds (docs/PERFORMANCE.md); if this passes, update the figures and this test")
def test_fusion_is_not_worse_than_bm25_with_emulated_embeddings(base, questions):
    assert quality(base, questions, ("embeddings", "bm25")).hits_at_3 >= quality(base, questions, ("bm25",)).hits_at_3
