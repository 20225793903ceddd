"""The dashboard tells the truth: simulator traffic counted alike everywhere (and hidden by a
toggle), one simulator contact per operator across logins, "hybrid" search only when it is,
and one story about the status callback (nothing to paste)."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
from sqlalchemy import select

from app.knowledge import Chunk, KnowledgeBase
from app.models import Turn, User
from tests.web.dashboard.test_dashboard import PASSWORD, csrf_token, login, poll_until_reply


def _say(client, token, text, after=0):
    response = client.post("/simulator/messages", data={"text": text},
                           headers={"X-CSRFToken": token, "Accept": "application/json"})
    assert response.status_code == 202
    messages = poll_until_reply(client, after=after)
    return response.get_json()["user_id"], max(m["id"] for m in messages)


def _card(html, key):
    return int(re.search(rf'data-stat="{key}">(\d+)<', html).group(1))


def test_nine_simulator_turns_show_in_every_counter_and_the_toggle_hides_them(make_app):
    app = make_app(dashboard_password=PASSWORD)
    client = app.test_client()
    login(client)
    token = csrf_token(client, "/simulator")
    after = 0
    for n in range(9):
        _, after = _say(client, token, f"Quanto custa o serviço {n}?", after)
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(Turn.id).where(Turn.status != "answered")) is None
    body = client.get("/stats.json").get_json()
    assert body["include_simulator"] is True
    assert body["users"]["total"] == 1 and body["users"]["simulator"] == 1 and body["users"]["active_7d"] == 1
    assert body["messages"]["last_30_days"]["total"] == 18
    assert body["messages"]["last_30_days"]["inbound"] == 9
    assert body["delivery"]["by_status"]["delivered"] == 9
    assert body["turns"]["total"] == 9 and body["latency"]["sample_turns"] == 9
    html = client.get("/stats").get_data(as_text=True)
    assert _card(html, "users") == 1 and _card(html, "messages") == 18
    assert "Sobre os 9 atendimentos" in html
    assert 'id="simulator-toggle"' in html and 'href="/stats?simulator=0"' in html
    assert 'data-url="/stats.json"' in html
    # Hidden: every figure without it, the charts' empty states shown, the refresh keeps the filter.
    hidden = client.get("/stats.json?simulator=0").get_json()
    assert hidden["include_simulator"] is False and hidden["users"]["simulator"] == 1
    assert hidden["users"]["total"] == 0 and hidden["messages"]["last_30_days"]["total"] == 0
    assert hidden["turns"]["total"] == 0 and hidden["latency"]["sample_turns"] == 0
    assert hidden["delivery"]["total"] == 0
    html = client.get("/stats?simulator=0").get_data(as_text=True)
    assert _card(html, "users") == 0 and "Sobre os 0 atendimentos" in html
    assert 'data-url="/stats.json?simulator=0"' in html and 'aria-checked="false"' in html
    for key in ("messages", "delivery", "latency", "errors"):
        assert re.search(rf'class="chart-empty text-body-secondary small" data-empty-for="{key}"', html), key


def test_empty_charts_say_so_and_charts_with_data_do_not(make_app):
    app = make_app(start_workers=False, dashboard_password=PASSWORD)
    client = app.test_client()
    login(client)
    html = client.get("/stats").get_data(as_text=True)
    assert "Ainda não há mensagens nos últimos 30 dias." in html
    assert "Nenhuma resposta enviada nos últimos 30 dias." in html
    assert "Nenhum atendimento respondido ainda" in html and "Nenhum erro nos últimos 30 dias." in html
    assert 'class="chart-box d-none"><canvas id="chart-messages"' in html


def test_one_simulator_contact_per_operator_across_logins_and_a_new_conversation(make_app):
    app = make_app(dashboard_password=PASSWORD)
    first = app.test_client()
    login(first)
    token = csrf_token(first, "/simulator")
    user_id, _ = _say(first, token, "Oi, tudo bem?")
    first.post("/logout", data={"csrf_token": token})
    # Logging in again, in another browser too: the same contact and its conversation.
    again = app.test_client()
    login(again)
    page = again.get("/simulator").get_data(as_text=True)
    assert "Contato simulado de <strong>admin</strong>" in page
    messages = again.get("/simulator/messages.json").get_json()["messages"]
    assert [m["body"] for m in messages if m["direction"] == "in"] == ["Oi, tudo bem?"]
    token = csrf_token(again, "/simulator")
    same_user, _ = _say(again, token, "Quanto custa?", after=max(m["id"] for m in messages))
    assert same_user == user_id
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(User.id).where(User.channel == "simulator", User.id != user_id)) is None
    # "Nova conversa": the old contact is archived (kept, with its history), the next message starts anew.
    assert again.post("/simulator/reset", data={"csrf_token": token}).status_code == 302
    assert again.get("/simulator/messages.json").get_json()["messages"] == []
    new_user, _ = _say(again, token, "Oi de novo")
    assert new_user != user_id
    with app.extensions["endrigo"].db.session() as session:
        archived = session.get(User, user_id)
        assert archived.channel == "simulator" and archived.phone.startswith(session.get(User, new_user).phone + "~")
        assert archived.message_count == 2
    # Another operator (a named login) has a contact of their own.
    other = app.test_client()
    login(other)
    with other.session_transaction() as browser_session:
        browser_session["operator_name"] = "maria"
    assert other.get("/simulator/messages.json").get_json()["messages"] == []
    assert "Contato simulado de <strong>maria</strong>" in other.get("/simulator").get_data(as_text=True)


def test_hybrid_search_is_claimed_only_when_embeddings_are_loaded(make_app):
    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    html = app.test_client().get("/").get_data(as_text=True)
    assert "Busca híbrida" not in html and "Busca por palavras-chave (BM25)" in html
    chunks = [Chunk(id=f"a.md#{i}", source="a.md", heading="A", text=f"texto {i}", hash=str(i)) for i in range(3)]
    kb = KnowledgeBase.from_chunks(chunks, np.eye(3, dtype=np.float32), gateway=SimpleNamespace(available=True))
    assert kb.mode == "hybrid"
    services.__dict__["knowledge"] = kb  # the cached collaborator, replaced for this app only
    html = app.test_client().get("/").get_data(as_text=True)
    assert "Busca híbrida" in html and "Busca por palavras-chave (BM25)" not in html


def test_the_status_page_says_the_status_callback_needs_no_pasting(make_app):
    app = make_app(start_workers=False)
    html = app.test_client().get("/").get_data(as_text=True)
    item = re.search(r'data-webhook="/webhook/whatsapp/status">(.*?)</li>', html, re.S).group(1)
    assert "automático" in item and "Não precisa colar" in item
    inbound = re.search(r'data-webhook="/webhook/whatsapp">(.*?)</li>', html, re.S).group(1)
    assert "colar na Twilio" in inbound and "A MESSAGE COMES IN" in inbound
    assert "table" not in re.search(r'id="webhooks-title".*?</section>', html, re.S).group(0)
