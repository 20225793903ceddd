"""The dashboard in a real headless Chromium (Debian's package) driven by Playwright for Python.

The real app is served by werkzeug on 127.0.0.1 in a thread; the browser logs in, reads the
status cards, plays a seeded voice reply, chats in the simulator (offline mode: the
knowledge base answers) and waits for a chart to be drawn. Every page must load without
console errors -- a CSP violation (an inline script or style) shows up as one.
Screenshots go to test-artifacts/ (gitignored).

No ``playwright install``: the browser is /usr/bin/chromium (``apt-get install chromium``;
CHROMIUM_PATH overrides the path).
Without it these tests skip, saying why -- except under CI=true, where they fail.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app.db import utcnow
from app.models import Message, Turn, User
from tests.fakes.audio_samples import speech_like_ogg

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # Debian's package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # The audio test calls play() from script, without a click.
                 "--autoplay-policy=no-user-gesture-required"]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
PASSWORD = "browser-test-password"
TIMEOUT_MS = 15_000


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run on CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright (Python) is not installed: pip install -r requirements-dev.txt")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except PlaywrightError as exc:
            _unavailable(f"Chromium did not start: {exc.message.splitlines()[0]}")
        yield instance
        instance.close()


@pytest.fixture
def live_app(make_app):
    """The real app on 127.0.0.1:<free port>, offline (no OpenAI key), inbox running."""
    app = make_app(dashboard_password=PASSWORD, public_base_url=None)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    app.config["LIVE_URL"] = f"http://127.0.0.1:{server.server_port}"
    yield app
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def page(browser, live_app, request):
    context = browser.new_context(base_url=live_app.config["LIVE_URL"], locale="pt-BR",
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    yield tab
    ARTIFACTS.mkdir(exist_ok=True)
    name = request.node.name.replace("[", "-").replace("]", "")
    try:
        tab.screenshot(path=str(ARTIFACTS / f"{name}-final.png"), full_page=True)
    finally:
        context.close()
    assert not problems, f"console errors (a CSP violation shows up here): {problems}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page) -> None:
    page.goto("/login")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("text=Sair").count() == 1


def seed_voice_conversation(app) -> int:
    services = app.extensions["endrigo"]
    stored = services.storage.save(speech_like_ogg(2.0), "audio/ogg", ".ogg", base_url=app.config["LIVE_URL"])
    at = utcnow() - dt.timedelta(minutes=3)
    with services.db.session() as s:
        user = User(phone="+5511987654321", profile_name="Joana", message_count=1, first_seen_at=at, last_seen_at=at)
        s.add(user)
        s.flush()
        turn = Turn(user_id=user.id, status="answered", reply_kind="audio", created_at=at,
                    timings={"transcribe": 700.0, "answer": 1200.0, "speak": 800.0, "send": 200.0,
                             "end_to_end": 3100.0})
        s.add(turn)
        s.flush()
        s.add(Message(user_id=user.id, turn_id=turn.id, direction="in", kind="text", status="answered",
                      body="Vocês fazem sites?", created_at=at, updated_at=at))
        s.add(Message(user_id=user.id, turn_id=turn.id, direction="out", kind="audio", status="delivered",
                      part_index=0, media_url=stored.url, media_type="audio/ogg", body="Fazemos, sim!",
                      created_at=at + dt.timedelta(seconds=3), updated_at=at + dt.timedelta(seconds=3)))
        return user.id


def test_log_in_and_see_the_status_cards(page):
    page.goto("/")
    cards = page.locator(".status-card")
    assert cards.count() == 6
    assert page.locator('[data-component="database"]').get_attribute("data-state") == "healthy"
    assert page.locator("#offline-banner").is_visible()
    # The indicator is animated: its ring runs a CSS animation (no inline style involved).
    animation = page.eval_on_selector('[data-component="database"] .status-dot',
                                      "el => getComputedStyle(el, '::after').animationName")
    assert animation == "pulse-ring"
    shot(page, "status-public")
    page.click("text=Entrar")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("nav >> text=Conversas").is_visible()
    assert page.locator(".status-card").count() == 6
    shot(page, "status-logged-in")


def test_play_a_voice_reply_in_a_conversation(page, live_app):
    user_id = seed_voice_conversation(live_app)
    log_in(page)
    page.goto("/conversations")
    page.click("text=Joana")
    page.wait_for_url(f"**/conversations/{user_id}")
    audio = page.locator("audio")
    assert audio.count() == 1
    page.wait_for_function("() => document.querySelector('audio').readyState >= 2")
    played = page.evaluate("""async () => {
        const audio = document.querySelector('audio');
        audio.muted = true;
        await audio.play();
        await new Promise(resolve => setTimeout(resolve, 600));
        return {time: audio.currentTime, duration: audio.duration, ready: audio.readyState, error: audio.error};
    }""")
    assert played["error"] is None and played["ready"] >= 2
    assert 1.5 < played["duration"] < 2.5 and played["time"] > 0
    assert page.locator("text=+55 11 9****-4321").count() >= 1
    assert page.locator("text=987654321").count() == 0
    shot(page, "transcript-audio")


def test_simulator_reply_appears(page):
    log_in(page)
    page.goto("/simulator")
    page.fill("#simulator-text", "Quais serviços vocês oferecem?")
    page.click("#simulator-send")
    page.wait_for_selector(".bubble.in >> text=Quais serviços vocês oferecem?")
    reply = page.wait_for_selector(".bubble.out")
    assert "Tráfego pago" in reply.inner_text()
    page.wait_for_selector("#simulator-typing.d-none", state="attached")
    # A voice note goes up as multipart from the page's script and plays back from the server.
    page.set_input_files("#simulator-audio", files=[{"name": "nota.ogg", "mimeType": "audio/ogg",
                                                     "buffer": speech_like_ogg(1.5)}])
    page.click("#simulator-send")
    page.wait_for_selector('.bubble.in[data-kind="audio"] audio')
    page.wait_for_function("() => document.querySelector('.bubble.in[data-kind=audio] audio').readyState >= 2")
    page.wait_for_function("() => document.querySelectorAll('.bubble.out').length >= 2")  # its answer, offline
    shot(page, "simulator")


def test_a_chart_is_drawn(page, live_app):
    seed_voice_conversation(live_app)
    log_in(page)
    page.goto("/stats")
    page.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('chart-messages'))")
    page.wait_for_timeout(1200)  # let the entry animation finish before reading pixels
    painted = page.evaluate("""() => {
        const canvas = document.getElementById('chart-messages');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
        return {painted, bars: Chart.getChart(canvas).data.datasets.length};
    }""")
    assert painted["bars"] == 3 and painted["painted"] > 1000
    assert page.locator('[data-stat="users"]').inner_text() == "1"
    shot(page, "stats")


def test_the_realtime_card_fills_itself_for_operators(page, live_app):
    from app.models import RealtimeSession

    with live_app.extensions["endrigo"].db.session() as s:
        user = User(phone="+5511900001111", message_count=1)
        s.add(user)
        s.flush()
        turn = Turn(user_id=user.id, status="answered")
        s.add(turn)
        s.flush()
        s.add(RealtimeSession(turn_id=turn.id, user_id=user.id, outcome="answered", model="gpt-realtime-2",
                              voice="openai", latency_ms=1800.0))
        s.add(RealtimeSession(turn_id=turn.id, user_id=user.id, outcome="fallback", reason="timeout",
                              error="no complete answer within 12 s", model="gpt-realtime-2", voice="openai"))
    page.goto("/")
    assert page.locator("#realtime-live").count() == 0  # the public page has no live numbers
    log_in(page)
    live = page.locator("#realtime-live")
    live.wait_for(state="visible")
    assert live.locator('[data-field="sessions_today"]').inner_text() == "2"
    assert live.locator('[data-field="successes"]').inner_text() == "1"
    assert live.locator('[data-field="fallbacks"]').inner_text() == "1 (tempo esgotado: 1)"
    assert live.locator('[data-field="latency"]').inner_text() == "1,8 s / 1,8 s"
    last_error = live.locator('[data-field="last_error"]').inner_text()
    assert last_error.startswith("tempo esgotado — no complete answer")
    assert not page.locator("#realtime-test").is_visible()  # offline app: no key, no test session
    shot(page, "status-realtime-card")
