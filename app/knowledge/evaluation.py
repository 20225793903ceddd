"""Retrieval quality: hit@k of a ranker over a labelled question set (tests/data/retrieval_questions.json).

A question is labelled with the sections that answer it, as ``section_label`` names them:
"source: heading path" ("servicos.md: Serviços > Tráfego pago"). Chunk ids and hashes change
whenever the chunking does; a section's label only changes when its document is edited there.
A question is a hit at k when one of the first k chunks belongs to one of its sections.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Sequence

from app.knowledge.chunking import Chunk

QUESTIONS_FORMAT = 1


@dataclass(frozen=True)
class LabelledQuestion:
    question: str
    answers: tuple[str, ...]  # section labels; the first is the main answer
    split: str  # "dev" (looked at while tuning) or "heldout" (only measured)


def section_label(chunk: Chunk) -> str:
    """The stable name of the section a chunk comes from: "source: heading path"."""
    return f"{chunk.source}: {chunk.heading}" if chunk.heading else chunk.source


def load_questions(path: str | os.PathLike) -> list[LabelledQuestion]:
    """The labelled questions of a question-set file; ValueError names what is wrong."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if data.get("format") != QUESTIONS_FORMAT:
        raise ValueError(f"{path}: unknown format {data.get('format')!r}")
    questions = []
    for n, item in enumerate(data["questions"]):
        if not item.get("question") or not item.get("answers") or item.get("split") not in ("dev", "heldout"):
            raise ValueError(f"{path}: question {n} needs a question, answers and a split (dev|heldout)")
        questions.append(LabelledQuestion(item["question"], tuple(item["answers"]), item["split"]))
    return questions


def first_hit_rank(chunks: Sequence[Chunk], answers: Sequence[str]) -> int | None:
    """1-based rank of the first chunk from an answering section, or None."""
    for rank, chunk in enumerate(chunks, start=1):
        if section_label(chunk) in answers:
            return rank
    return None


@dataclass(frozen=True)
class Quality:
    """hit@1 and hit@3 counts over ``total`` questions, and the questions missed at 3."""

    total: int
    hits_at_1: int
    hits_at_3: int
    missed_at_3: tuple[str, ...]

    @property
    def hit_at_1(self) -> float:
        return self.hits_at_1 / self.total if self.total else 0.0

    @property
    def hit_at_3(self) -> float:
        return self.hits_at_3 / self.total if self.total else 0.0


def measure(rank: Callable[[str, int], Sequence[Chunk]], questions: Sequence[LabelledQuestion]) -> Quality:
    """hit@1 and hit@3 of ``rank(question, k)`` (the best ``k`` chunks, best first)."""
    at_1 = at_3 = 0
    missed = []
    for item in questions:
        hit = first_hit_rank(rank(item.question, 3), item.answers)
        at_1 += hit == 1
        at_3 += hit is not None
        if hit is None:
            missed.append(item.question)
    return Quality(len(questions), at_1, at_3, tuple(missed))
