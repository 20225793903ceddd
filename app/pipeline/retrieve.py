"""The retrieve stage: hybrid retrieval (embeddings + BM25) of knowledge passages for the turn's text."""
from __future__ import annotations

from app.pipeline.context import TurnContext

TOP_K = 5


def run(ctx: TurnContext) -> None:
    if ctx.answer_text is not None or not ctx.user_text:
        return
    ctx.passages = ctx.services.knowledge.search(ctx.user_text, k=TOP_K)
