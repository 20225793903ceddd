"""The stats and status pages on a 390 px phone (headless Chromium, as in tests/test_browser.py):
nothing wider than the screen, the simulator toggle and the copy buttons reachable, the
webhook URLs on one or two lines, empty charts replaced by their Portuguese empty-state text.
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import pytest

from tests.web.dashboard.test_browser import (  # noqa: F401
    ARTIFACTS,
    TIMEOUT_MS,
    browser,
    live_app,
    log_in,
    seed_voice_conversation,
)

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser, live_app, request):  # noqa: F811 - pytest fixtures imported above
    context = browser.new_context(base_url=live_app.config["LIVE_URL"], locale="pt-BR", viewport=PHONE,
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    yield tab
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}-390.png"), full_page=True)
    finally:
        context.close()
    assert not problems, f"console errors: {problems}"


def page_width(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth")


def inside_the_screen(page, selector: str) -> None:
    for box in (page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())):
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 0.5, (selector, box)


def test_the_status_page_fits_a_phone_and_its_webhook_urls_do_not_shred(phone):
    phone.goto("/")
    assert page_width(phone) <= PHONE["width"]
    urls = phone.locator(".webhook-url")
    assert urls.count() >= 2
    for i in range(urls.count()):
        lines = urls.nth(i).evaluate(
            "el => Math.round(el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight))")
        assert lines <= 2, (urls.nth(i).inner_text(), lines)
    inside_the_screen(phone, "[data-copy]")
    inside_the_screen(phone, ".status-card")


def test_the_stats_page_fits_a_phone_with_its_toggle_and_empty_states(phone):
    log_in(phone)
    phone.goto("/stats")
    assert page_width(phone) <= PHONE["width"]
    # A fresh database: every chart says it is empty, in Portuguese, instead of drawing nothing.
    for key, text in (("messages", "Ainda não há mensagens"), ("delivery", "Nenhuma resposta enviada"),
                      ("latency", "Nenhum atendimento respondido"), ("errors", "Nenhum erro")):
        empty = phone.locator(f'[data-empty-for="{key}"]')
        assert empty.is_visible() and text in empty.inner_text()
    inside_the_screen(phone, "#simulator-toggle")
    inside_the_screen(phone, ".stat-value")
    phone.click("#simulator-toggle")
    phone.wait_for_url("**/stats?simulator=0")
    assert phone.locator("#simulator-toggle").get_attribute("aria-checked") == "false"


def test_the_stats_page_with_data_on_a_phone(phone, live_app):  # noqa: F811
    seed_voice_conversation(live_app)
    log_in(phone)
    phone.goto("/stats")
    phone.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('chart-latency'))")
    assert page_width(phone) <= PHONE["width"]
    assert not phone.locator('[data-empty-for="latency"]').is_visible()
    assert phone.locator("#chart-latency").is_visible()
    inside_the_screen(phone, ".chart-box:not(.d-none)")
    inside_the_screen(phone, "#latency-table")
