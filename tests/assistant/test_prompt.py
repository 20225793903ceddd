"""The prompt's stable part (app/assistant/prompt.py split_persona): identical for every message."""
from __future__ import annotations

import datetime as dt

from app.assistant.prompt import FACTS_POINTER, split_persona, turn_facts
from app.knowledge import load_persona
from app.turn import Passage, UserSnapshot


def _user(name: str) -> UserSnapshot:
    return UserSnapshot(id=1, phone="+5511999990001", channel="whatsapp", name=name, reply_mode="auto",
                        message_count=3, first_seen_at=dt.datetime(2026, 11, 1, 12, 0))


def test_the_shipped_persona_splits_into_a_stable_part_and_the_facts_of_a_message(tmp_path):
    persona = load_persona("documents")
    stable, template = split_persona(persona)
    assert "{" not in stable and FACTS_POINTER in stable and "## Context" in stable and "## Behavior" in stable
    assert {"{context}", "{profile}", "{datetime}"} <= {w for w in ("{context}", "{profile}", "{datetime}")
                                                      if w in template}
    passage = Passage(chunk_id="c1", source="servicos.md", heading="Serviços > Sites", text="Fazemos sites.", score=1.0)
    facts = turn_facts(template, [passage], _user("Ana"))
    assert "Fazemos sites." in facts and "- Nome: Ana" in facts and "{" not in facts
    # Another user, other passages: the stable part does not move (what the prompt cache needs).
    assert split_persona(persona)[0] == stable
    assert turn_facts(template, [], _user("Bruno")) != facts


def test_a_persona_without_a_context_section_still_gets_its_facts():
    stable, template = split_persona("## Core\nSou Endrigo. {profile}")
    assert "{profile}" not in stable and FACTS_POINTER in stable
    assert "- Nome: Ana" in turn_facts(template, [], _user("Ana"))
