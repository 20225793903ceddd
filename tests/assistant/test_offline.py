"""The offline assistant: intent rules, answers from the knowledge base, and a short
conversation through the simulator with no OpenAI key (a real handoff included)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from app.assistant import offline
from app.assistant.intents import normalise, read
from app.knowledge import KnowledgeBase
from app.knowledge.evaluation import load_questions
from app.models import Handoff, Message
from tests.web.dashboard.test_dashboard import PASSWORD, logged_in_token, login, poll_until_reply

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ROOT / "tests" / "data" / "retrieval_questions.json"
SERVICES = ["Tráfego pago", "Redes sociais", "Automação de WhatsApp", "Sites e landing pages", "Consultoria"]


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase(ROOT / "documents")


# ---- intents -----------------------------------------------------------------------------

def test_normalise_folds_accents_case_punctuation_repeats_and_abbreviations():
    assert normalise("Obg!!! Vc é DEMAAAIS, né?") == "obrigado voce e demais ne"
    assert normalise("  Olá,   tudo   bem?? ") == "ola tudo bem"


@pytest.mark.parametrize("message, intent", [
    ("Oi, tudo bem?", "greeting"),
    ("oiii", "greeting"),
    ("Bom dia!", "greeting"),
    ("Olá", "greeting"),
    ("muito obrigada!", "thanks"),
    ("obg", "thanks"),
    ("valeu, tchau", "goodbye"),
    ("Até logo", "goodbye"),
    ("ok", "ack"),
    ("Quem é você?", "identity"),
    ("vc é um robô?", "identity"),
    ("você é humano?", "identity"),
    ("Quero falar com uma pessoa", "handoff"),
    ("quero falar com um atendente", "handoff"),
    ("ATENDENTE!", "handoff"),
    ("humano", "handoff"),
    ("me passa pra alguém da equipe pf", "handoff"),
    ("oi, quero um humano", "handoff"),
    ("me manda em áudio", "voice_reply"),
    ("vc responde por audio tb?", "voice_reply"),
    ("Você entende áudio?", "voice_input"),
    ("posso mandar audio?", "voice_input"),
    ("Quais serviços vocês oferecem?", None),
    ("Oi! Quanto custa?", None),
    ("Vocês têm atendimento aos sábados?", None),
    ("qual o horario de atendimento", None),
])
def test_intents_are_read_from_the_phrase_table(message, intent):
    assert read(message).main == intent


def test_a_greeting_with_a_question_is_both():
    reading = read("Boa tarde! Quais serviços vocês oferecem?")
    assert reading.has("greeting") and reading.main is None


# ---- replies, without the app --------------------------------------------------------------

def _reply(kb, text, **turn):
    return offline.answer(text, kb.search(text, 5), offline.OfflineTurn(subsections=kb.subsections, **turn))


def test_the_services_question_lists_the_five_services_from_the_knowledge_base(kb):
    reply = _reply(kb, "Quais serviços vocês oferecem?")
    bullets = [line[2:] for line in reply.split("\n") if line.startswith("• ")]
    assert bullets == SERVICES
    assert "cinco frentes de trabalho" in reply
    assert "Serviços >" not in reply and "*Serviços" not in reply


def test_the_list_comes_from_the_documents(tmp_path):
    (tmp_path / "menu.md").write_text("# Cardápio\n\nServimos três pratos.\n\n## Feijoada\n\nCom couve.\n\n"
                                      "## Moqueca\n\nDe peixe.\n\n## Escondidinho\n\nDe carne seca.\n",
                                      encoding="utf-8")
    kb = KnowledgeBase(tmp_path)
    reply = _reply(kb, "quais pratos vocês servem?")
    assert "Servimos três pratos." in reply
    assert [line[2:] for line in reply.split("\n") if line.startswith("• ")] == ["Feijoada", "Moqueca", "Escondidinho"]


def _line_breaks_mid_sentence(reply: str) -> list[str]:
    """Lines that end without final punctuation and are followed by a line continuing them
    (a list item, a blank line or a line after a list item is a legitimate break)."""
    lines = reply.split("\n")
    bad = []
    for line, following in zip(lines, lines[1:]):
        if not line.strip() or not following.strip():
            continue
        if line.lstrip().startswith("• ") or following.lstrip().startswith("• "):
            continue
        if not re.search(r"[.!?:…]$", line.rstrip()):
            bad.append(line)
    return bad


def test_replies_to_the_whole_question_set_are_reflowed_and_have_no_breadcrumbs(kb):
    questions = load_questions(QUESTIONS)
    assert len(questions) >= 60
    for question in questions:
        reply = _reply(kb, question.question, open_handoff=lambda reason: False)
        assert reply.strip(), question.question
        assert not _line_breaks_mid_sentence(reply), (question.question, reply)
        assert " > " not in reply, (question.question, reply)
        assert not re.search(r"^\*[^*\n]+\*$", reply, re.M), (question.question, reply)  # a heading line
        assert len(reply) < 1200, question.question


def test_one_section_only_no_second_passage(kb):
    reply = _reply(kb, "Qual o horário de atendimento de vocês?")
    assert "segunda a sexta-feira" in reply
    # The runner-up passages of that search are other sections: none of their text appears.
    for passage in kb.search("Qual o horário de atendimento de vocês?", 5)[1:]:
        if passage.heading != "Atendimento > Horário de atendimento":
            assert passage.text[:60] not in reply


def test_the_name_is_used_once_and_closings_do_not_repeat(kb):
    earlier: list[str] = []
    replies = []
    for text in ("Oi, tudo bem?", "Quanto custa?", "Qual o horário de atendimento?", "Vocês atendem empresas de "
                 "qualquer cidade?", "Como é o contrato?"):
        reply = _reply(kb, text, name="Maria Silva", earlier_replies=list(earlier))
        replies.append(reply)
        earlier.append(reply)
    assert replies[0].startswith("Oi, Maria!")
    assert sum("Maria" in reply for reply in replies) == 1
    endings = [reply.rsplit("\n", 1)[-1] for reply in replies[1:]]
    assert all(a != b for a, b in zip(endings, endings[1:])), endings


def test_small_talk_and_identity(kb):
    first = _reply(kb, "Oi, tudo bem?", name="João")
    assert first.startswith("Oi, João! Tudo ótimo") and "assistente virtual da Endrigo Digital" in first
    later = _reply(kb, "oi", name="João", earlier_replies=[first])
    assert "João" not in later and "assistente virtual" not in later
    assert _reply(kb, "Bom dia!").startswith("Bom dia!")
    assert "Por nada" in _reply(kb, "obrigado!", earlier_replies=[first])
    assert "Até mais" in _reply(kb, "tchau", earlier_replies=[first])
    identity = _reply(kb, "Quem é você?", earlier_replies=[first])
    assert "assistente virtual" in identity and "não sou uma pessoa" in identity


def test_audio_requests_get_an_honest_answer(kb):
    reply = _reply(kb, "me manda em áudio", earlier_replies=["x"])
    assert "não consigo responder em áudio" in reply and "texto" in reply
    assert "Você pode escrever ou mandar mensagens de voz" not in reply  # not the keyword-matched passage
    listened = _reply(kb, "você entende áudio?", earlier_replies=["x"])
    assert "não consigo ouvir" in listened
    switched = []
    with_voice = _reply(kb, "me responde em áudio", earlier_replies=["x"], prefer_voice=lambda: switched.append(1))
    assert switched == [1] and "te respondo em áudio" in with_voice


def test_handoff_requests_call_the_handoff(kb):
    reasons = []
    reply = _reply(kb, "Quero falar com uma pessoa", earlier_replies=["x"],
                   open_handoff=lambda reason: reasons.append(reason) or False)
    assert len(reasons) == 1 and "Quero falar com uma pessoa" in reasons[0]
    assert "avisei a equipe" in reply
    again = _reply(kb, "atendente", earlier_replies=["x"], open_handoff=lambda reason: True)
    assert "já está com a equipe" in again


def test_nothing_found_says_so(kb):
    reply = _reply(kb, "qual a capital da França?", earlier_replies=["x"])
    assert "Não encontrei" in reply and "pessoa da equipe" in reply


def test_a_long_section_is_cut_at_a_sentence_and_lists_stay_lists():
    paragraph = " ".join(f"Frase número {n} do texto." for n in range(60))
    cut = offline.section_text(paragraph)
    assert len(cut) <= offline.MAX_ANSWER_CHARS and cut.endswith("do texto.")
    listed = offline.section_text("Temos:\n\n- um\n- dois\n- três")
    assert listed == "Temos:\n\n• um\n• dois\n• três"
    assert offline.section_text("final da frase anterior. Começo de outra.") == "Começo de outra."


# ---- through the app -------------------------------------------------------------------------

def test_a_short_conversation_in_the_simulator_offline(make_app):
    app = make_app(dashboard_password=PASSWORD)  # workers on, no OpenAI key: offline responder
    client = app.test_client()
    login(client)
    token = logged_in_token(client)
    replies = []
    after = 0
    for text in ("Oi, tudo bem?", "Quais serviços vocês oferecem?", "Quero falar com uma pessoa"):
        response = client.post("/simulator/messages", data={"text": text},
                               headers={"X-CSRFToken": token, "Accept": "application/json"})
        assert response.status_code == 202
        user_id = response.get_json()["user_id"]
        messages = poll_until_reply(client, after=after)
        out = [m for m in messages if m["direction"] == "out"]
        replies.append(out[-1]["body"])
        after = max(m["id"] for m in messages)
    greeting, services_reply, handoff_reply = replies
    assert greeting.startswith("Oi") and "assistente virtual da Endrigo Digital" in greeting
    assert "não encontrei" not in greeting.lower()
    for service in SERVICES:
        assert f"• {service}" in services_reply
    assert "Simulador" not in services_reply  # the name went once, in the greeting
    assert "avisei a equipe" in handoff_reply
    with app.extensions["endrigo"].db.session() as session:
        handoff = session.scalar(select(Handoff).where(Handoff.user_id == user_id))
        assert handoff is not None and handoff.status == "open"
        assert "Quero falar com uma pessoa" in handoff.reason
        replies_sent = session.scalars(select(Message).where(Message.user_id == user_id,
                                                             Message.direction == "out")).all()
        assert len(replies_sent) == 3
