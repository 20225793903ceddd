"""Human takeover in a real headless Chromium (same set-up as tests/test_browser.py): an agent
logs in with their own account, sees a conversation that starts waiting for a person appear
in the inbox without reloading, replies from the transcript, sees the answer arrive there by
itself, and closes the handoff — at
desktop width and at 390 px (a phone), where the cards and the buttons must stay on screen.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.assistant import handoff
from app.models import User
from app.operators import accounts
from tests.conftest import post_signed, wait_for
from tests.web.dashboard.test_browser import ARTIFACTS, TIMEOUT_MS, browser, live_app  # noqa: F401 - fixtures

AGENT, AGENT_PASSWORD = "maria", "senha-da-maria-123"
ANA = "whatsapp:+5511987650001"


def _say(app, twilio_fake, body: str) -> None:
    form = twilio_fake.inbound_form(from_=ANA, body=body, profile_name="Ana Paula")
    # No PUBLIC_BASE_URL in the live app: Twilio's signature covers the URL the request reached.
    response = post_signed(app.test_client(), "/webhook/whatsapp", form, twilio_fake.auth_token,
                           base="http://localhost")
    assert response.status_code == 200


@pytest.mark.parametrize("width", [1280, 390])
def test_an_agent_sees_the_waiting_conversation_replies_and_closes(browser, live_app, twilio_fake, width):  # noqa: F811
    services = live_app.extensions["endrigo"]
    accounts.create(services.db, AGENT, "agent", AGENT_PASSWORD)
    context = browser.new_context(base_url=live_app.config["LIVE_URL"], locale="pt-BR",
                                  viewport={"width": width, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # "Encerrar o atendimento humano…?"
    try:
        page.goto("/login")
        page.fill("#name", AGENT)
        page.fill("#password", AGENT_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        page.goto("/conversations")
        assert page.locator(".inbox-item").count() == 0

        # A person writes, asks for a human (the offline assistant's tool), and writes again.
        _say(live_app, twilio_fake, "Oi, queria saber dos planos")
        user_id = wait_for(lambda: _user_id(services))
        wait_for(lambda: twilio_fake.send_counts(to=ANA) >= 1, timeout=15)  # the bot answered
        handoff.open_handoff(services, user_id, "quer falar com uma pessoa", source="offline")
        _say(live_app, twilio_fake, "Alguém da equipe pode me ajudar?")

        card = page.wait_for_selector(f'.inbox-item.waiting[data-user-id="{user_id}"]')  # no reload
        assert "aguardando há" in card.inner_text() and "Ana Paula" in card.inner_text()
        assert "+55 11 9****-0001" in card.inner_text()
        assert page.locator("#waiting-count").inner_text() == "1 aguardando"
        _fits(page, width)
        page.screenshot(path=str(_artifact(f"inbox-{width}")), full_page=True)

        card.click()
        page.wait_for_url(f"**/conversations/{user_id}")
        page.wait_for_selector("#handoff-panel >> text=Atendimento humano aberto")
        reply = f"Oi Ana, aqui é a Maria da equipe ({width})."
        page.fill("#reply-text", reply)
        send = page.locator("#reply-send")
        send.scroll_into_view_if_needed()
        _on_screen(page, send, width)
        send.click()
        page.wait_for_selector("text=Mensagem enviada.")
        bubble = page.locator(".bubble.out", has_text=reply)
        assert bubble.count() == 1 and "maria · equipe" in bubble.inner_text()
        assert twilio_fake.send_counts(to=ANA, body=reply) == 1
        _fits(page, width)
        page.screenshot(path=str(_artifact(f"transcript-{width}")), full_page=True)

        # The person answers: the transcript shows it by itself (no reload by the test).
        _say(live_app, twilio_fake, "Obrigada, Maria!")
        page.wait_for_selector('.bubble.in:has-text("Obrigada, Maria!") >> text=aguardando a equipe')

        close = page.locator("#close-handoff")
        close.scroll_into_view_if_needed()
        _on_screen(page, close, width)
        close.click()
        page.wait_for_selector("text=o robô volta a responder")
        assert page.locator("#take-over").is_visible()
        assert "encerrou o atendimento humano" in page.locator("#audit-trail").inner_text()
    finally:
        context.close()
    assert not problems, f"console errors (a CSP violation shows up here): {problems}"


def _user_id(services):
    with services.db.session() as s:
        return s.scalar(select(User.id).where(User.phone == ANA.removeprefix("whatsapp:")))


def _fits(page, width: int) -> None:
    """Nothing wider than the screen: no action hidden off to the side."""
    overflow = page.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow} px wide on a {width} px screen"


def _on_screen(page, locator, width: int) -> None:
    box = locator.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, box


def _artifact(name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"takeover-{name}.png"
