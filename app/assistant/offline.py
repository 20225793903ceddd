"""The offline responder: answers from the knowledge base alone when there is no OpenAI key.

It quotes the best retrieved passages with a short Portuguese framing, so a fresh
checkout with no API keys still gives useful, honest answers.
"""
from __future__ import annotations

import re

from app.turn import Passage

MAX_PASSAGES = 2
MAX_CHARS_PER_PASSAGE = 500


def answer(user_text: str, passages: list[Passage], name: str | None = None) -> str:
    greeting = f"Oi, {name.split()[0]}!" if name else "Oi!"
    if not passages:
        return (
            f"{greeting} Estou em modo offline agora e não encontrei nada sobre isso na minha base. "
            "Pode perguntar de outro jeito, ou pedir para falar com uma pessoa da equipe?"
        )
    lines = [f"{greeting} Estou em modo offline, mas encontrei isto na minha base:"]
    for passage in passages[:MAX_PASSAGES]:
        lines.append(f"*{passage.heading}*\n{_excerpt(passage.text)}")
    lines.append("Se quiser, posso te passar para alguém da equipe.")
    return "\n\n".join(lines)


def _excerpt(text: str) -> str:
    text = re.sub(r"^#+\s*", "", text.strip(), flags=re.MULTILINE)
    text = re.sub(r"\s+\n", "\n", text)
    if len(text) <= MAX_CHARS_PER_PASSAGE:
        return text
    cut = text[:MAX_CHARS_PER_PASSAGE]
    end = max(cut.rfind(". "), cut.rfind("\n"))
    return (cut[: end + 1] if end > 200 else cut.rstrip() + "…").strip()
