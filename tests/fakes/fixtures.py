"""pytest plugin: provider emulators as fixtures (``pytest_plugins = ["tests.fakes.fixtures"]``).

One server per provider per session (starting a server costs a thread and a socket);
the function-scoped fixtures reset it before each test so no state leaks between tests:
recorded requests, queued faults, scripts, latency and settings return to defaults.
"""
from __future__ import annotations

import pytest

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


@pytest.fixture
def twilio_fake(_twilio_server) -> TwilioFake:
    _twilio_server.reset()
    yield _twilio_server
    _twilio_server.reset()


@pytest.fixture
def openai_fake(_openai_server) -> OpenAIFake:
    _openai_server.reset()
    yield _openai_server
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
