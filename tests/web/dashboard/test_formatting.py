"""WhatsApp formatting on the dashboard: escaped first, then formatted (the ``whatsapp`` filter)."""
from __future__ import annotations

import pytest

from app.db import utcnow
from app.models import Message
from app.web.dashboard.formatting import whatsapp_html
from tests.web.dashboard.test_dashboard import PASSWORD, csrf_token, login


@pytest.mark.parametrize("text, html", [
    ("*negrito*", "<strong>negrito</strong>"),
    ("_itálico_", "<em>itálico</em>"),
    ("~riscado~", "<s>riscado</s>"),
    ("```mono *não negrito*```", '<code class="wa-mono">mono *não negrito*</code>'),
    ("*_os dois_*", "<strong><em>os dois</em></strong>"),
    ("2*3*4 e nome_de_variavel", "2*3*4 e nome_de_variavel"),
    ("* solto * e _ solto _", "* solto * e _ solto _"),
    ("veja https://x.example/_a_/b", "veja https://x.example/_a_/b"),
    ("linha 1\n*linha 2*", "linha 1\n<strong>linha 2</strong>"),
])
def test_whatsapp_markers_become_tags(text, html):
    assert str(whatsapp_html(text)) == html


@pytest.mark.parametrize("attack", [
    "*<script>alert(1)</script>*",
    "_<img src=x onerror=alert(1)>_",
    "~<a href=\"javascript:alert(1)\">x</a>~",
    "```<svg onload=alert(1)>```",
    "*\" onmouseover=\"alert(1)*",
])
def test_markup_inside_the_formatting_stays_text(attack):
    html = str(whatsapp_html(attack))
    assert "<script" not in html and "<img" not in html and "<a " not in html and "<svg" not in html
    assert "&lt;" in html or "&#34;" in html
    assert html.startswith(("<strong>", "<em>", "<s>", '<code class="wa-mono">'))


def test_the_transcript_and_the_simulator_render_the_formatting(make_app):
    app = make_app(start_workers=False, dashboard_password=PASSWORD)
    client = app.test_client()
    login(client)
    token = csrf_token(client, "/simulator")
    sent = client.post("/simulator/messages", data={"text": "oi"},
                       headers={"X-CSRFToken": token, "Accept": "application/json"})
    user_id = sent.get_json()["user_id"]
    body = "Temos *cinco serviços*: _tráfego pago_ e *<script>alert(1)</script>*"
    with app.extensions["endrigo"].db.session() as session:
        session.add(Message(user_id=user_id, direction="out", channel="simulator", kind="text", body=body,
                            status="delivered", created_at=utcnow()))
    page = client.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert "<strong>cinco serviços</strong>" in page and "<em>tráfego pago</em>" in page
    assert "<script>alert(1)</script>" not in page
    assert "<strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>" in page
    messages = client.get("/simulator/messages.json").get_json()["messages"]
    reply = next(m for m in messages if m["direction"] == "out")
    assert reply["body"] == body  # the raw text stays available
    assert reply["body_html"] == ("Temos <strong>cinco serviços</strong>: <em>tráfego pago</em> e "
                                  "<strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>")
