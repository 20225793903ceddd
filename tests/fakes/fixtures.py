"""pytest plugin: provider emulators as fixtures (``pytest_plugins = ["tests.fakes.fixtures"]``).

One server per provider per session (starting a server costs a thread and a socket);
the function-scoped fixtures reset it before each test so no state leaks between tests:
recorded requests, queued faults, scripts, latency and settings return to defaults.

API conformance: at the teardown of every test that used ``twilio_fake`` or ``openai_fake``,
each request the emulator received is validated against the provider's official OpenAPI
spec (:mod:`tests.fakes.conformance`); a request the real API would refuse fails the test
at teardown, naming the request and the field. Tests that send bad requests on purpose
(to prove the emulator refuses them) opt out with ``@pytest.mark.nonconformant_ok``.
Set ``API_CONFORMANCE=0`` to switch the check off; without the specs it is skipped.
"""
from __future__ import annotations

import os

import pytest

from . import conformance
from .elevenlabs_fake import ElevenLabsFake
from .openai_fake import OpenAIFake
from .twilio_fake import TwilioFake


@pytest.fixture(scope="session")
def _twilio_server():
    with TwilioFake() as fake:
        yield fake


@pytest.fixture(scope="session")
def _openai_server():
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture(scope="session")
def _elevenlabs_server():
    with ElevenLabsFake() as fake:
        yield fake


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "nonconformant_ok: the test sends requests the real API would refuse "
                                       "on purpose; skip the API conformance check at teardown")


def pytest_terminal_summary(terminalreporter) -> None:
    stats = conformance.stats
    if not stats:
        return
    parts = [f"{p}: {stats[p, 'checked']} checked, {stats[p, 'skipped']} skipped (not in the spec), "
             f"{stats[p, 'violations']} refused" for p in sorted({p for p, _ in stats})]
    load = ", ".join(f"{p} {s:.2f} s" for p, s in sorted(conformance.parse_seconds.items()))
    terminalreporter.write_line(f"API conformance: {'; '.join(parts)}; spec load: {load}")


def _check_conformance(request, provider: str, fake) -> None:
    if os.environ.get("API_CONFORMANCE", "1") == "0" or request.node.get_closest_marker("nonconformant_ok"):
        return
    if not conformance.specs_available(provider)[0]:
        return
    with fake._lock:
        recorded = list(fake.requests)
    found = conformance.violations(provider, recorded)
    if found:
        pytest.fail(f"{len(found)} request(s) to the {provider} emulator that the real API would refuse:\n"
                    + "\n".join(f"  {v}" for v in found), pytrace=False)


@pytest.fixture
def twilio_fake(_twilio_server, request) -> TwilioFake:
    _twilio_server.reset()
    yield _twilio_server
    try:
        _check_conformance(request, "twilio", _twilio_server)
    finally:
        _twilio_server.reset()


@pytest.fixture
def openai_fake(_openai_server, request) -> OpenAIFake:
    _openai_server.reset()
    yield _openai_server
    try:
        _check_conformance(request, "openai", _openai_server)
    finally:
        _openai_server.reset()


@pytest.fixture
def elevenlabs_fake(_elevenlabs_server) -> ElevenLabsFake:
    _elevenlabs_server.reset()
    yield _elevenlabs_server
    _elevenlabs_server.reset()


# The realtime emulator is a WebSocket server on its own asyncio loop (tests/fakes/realtime_fake.py).
from .realtime_fake import RealtimeFake  # noqa: E402  (appended section)


@pytest.fixture(scope="session")
def _realtime_server():
    with RealtimeFake() as fake:
        yield fake


@pytest.fixture
def realtime_fake(_realtime_server) -> RealtimeFake:
    _realtime_server.reset()
    yield _realtime_server
    _realtime_server.reset()
