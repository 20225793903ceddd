"""Model-shutdown watch: warn before a configured OpenAI model stops working.

For each OpenAI model setting (``WATCHED_SETTINGS``) the watch learns the model's
``shutdown_date``:

- online, from OpenAI itself (``OpenAIGateway.model_info``: ``GET /v1/models/{model}``);
  when the API answers, its word is final - a date, or null for "none announced";
- offline (no key), when the call fails, or when the payload carries no ``shutdown_date``
  field, from ``KNOWN_SHUTDOWNS``, the dates OpenAI announced (checked November 2026).

A model with a date is reported in ``/health`` (``deprecations``), in a dashboard banner,
and in the log: WARNING while the date is ahead, ERROR once it has passed or when OpenAI
says the model does not exist. The check runs at start-up in a background thread and then
once a day (each gunicorn worker process runs its own).

Refusing to boot: only online, and only when the API itself answers 404
``model_not_found`` for a model the pipeline calls (``REFUSE_WHEN_GONE``) within the first
``STARTUP_WAIT_SECONDS`` - every turn would fail, so failing loudly at start is kinder
than a bot that apologises to everyone. A date from the shipped table (which could be
wrong or overtaken) never stops the app, nor does an API check that answers late; those
are logged as ERRORs.

Not models, so not in the table: the v1/prompts API (shut down 2026-11-30) and the
Assistants API (2026-08-26); the code uses neither, and ASSISTANT_ID has a boot warning.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from app.config import ConfigError, Settings

log = logging.getLogger(__name__)

# (environment variable, Settings attribute) of every configured OpenAI model.
WATCHED_SETTINGS = (
    ("OPENAI_MODEL", "openai_model"),
    ("OPENAI_TRANSCRIBE_MODEL", "openai_transcribe_model"),
    ("OPENAI_EMBEDDING_MODEL", "openai_embedding_model"),
    ("OPENAI_REALTIME_MODEL", "openai_realtime_model"),
)
# The models the pipeline calls on every turn. Not the realtime model: a turn whose realtime
# session fails (model gone included) is answered by the main pipeline, so it is watched and
# reported, never a reason to refuse the boot.
REFUSE_WHEN_GONE = frozenset({"OPENAI_MODEL", "OPENAI_TRANSCRIBE_MODEL", "OPENAI_EMBEDDING_MODEL"})

# Shutdown dates OpenAI announced (model id or fnmatch pattern), from /work/shared/PROVIDERS.md.
KNOWN_SHUTDOWNS: tuple[tuple[str, dt.date], ...] = (
    ("gpt-realtime", dt.date(2027, 1, 20)),
    ("gpt-realtime-mini", dt.date(2027, 1, 20)),
    ("whisper-1", dt.date(2027, 2, 26)),
    ("gpt-4o-transcribe", dt.date(2027, 2, 26)),
    ("gpt-4o-*-transcribe", dt.date(2027, 2, 26)),
)

CHECK_INTERVAL_SECONDS = 24 * 3600
STARTUP_WAIT_SECONDS = 3.0
# One short try per model: the watch must not hold a thread (or the boot) for long.
CALL_TIMEOUT_SECONDS = 5.0

SOURCE_API = "api"
SOURCE_TABLE = "table"


class ModelGone(ConfigError):
    """OpenAI says a model the pipeline calls does not exist; the message names the variable."""


def known_shutdown(model: str) -> dt.date | None:
    """The announced shutdown date of ``model`` in the shipped table, or None."""
    for pattern, date in KNOWN_SHUTDOWNS:
        if fnmatch.fnmatchcase(model, pattern):
            return date
    return None


def utc_today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


@dataclass(frozen=True)
class ModelCheck:
    """What the watch knows about one configured model."""

    setting: str
    model: str
    shutdown_date: dt.date | None
    source: str  # SOURCE_API (OpenAI said so) or SOURCE_TABLE (KNOWN_SHUTDOWNS)
    not_found: bool = False  # OpenAI answered 404 model_not_found

    def state(self, today: dt.date) -> str | None:
        """``not_found``, ``shut_down`` (on or after the date), ``scheduled``, or None (nothing to report)."""
        if self.not_found:
            return "not_found"
        if self.shutdown_date is None:
            return None
        return "shut_down" if self.shutdown_date <= today else "scheduled"


class ModelWatch:
    def __init__(self, settings: Settings, gateway, *, today: Callable[[], dt.date] | None = None,
                 interval_seconds: float = CHECK_INTERVAL_SECONDS):
        self.settings = settings
        self.gateway = gateway
        self._today = today
        self.interval_seconds = interval_seconds
        self._lock = threading.Lock()
        # Known at once, before any call: the table's view of the configured models.
        self._checks = [self._from_table(setting, model) for setting, model in self.configured()]
        self._stop = threading.Event()
        self._first_check_done = threading.Event()
        self._thread: threading.Thread | None = None

    def today(self) -> dt.date:
        return self._today() if self._today is not None else utc_today()

    def configured(self) -> list[tuple[str, str]]:
        return [(name, getattr(self.settings, attr)) for name, attr in WATCHED_SETTINGS
                if getattr(self.settings, attr, None)]

    # -- checking ----------------------------------------------------------------------------
    def check(self, use_api: bool = True) -> list[ModelCheck]:
        """Learn every configured model's date (the API when usable, else the table) and log it."""
        asking = use_api and getattr(self.gateway, "available", False)
        checks = [self._ask(setting, model) if asking else self._from_table(setting, model)
                  for setting, model in self.configured()]
        with self._lock:
            self._checks = checks
        self._log(checks)
        return checks

    def _ask(self, setting: str, model: str) -> ModelCheck:
        try:
            info = self.gateway.model_info(model, timeout=CALL_TIMEOUT_SECONDS, max_retries=0)
        except Exception as exc:  # noqa: BLE001 - any failure means "use the table", never a crash
            log.info("model watch: could not ask OpenAI about %s=%s (%s); using the shipped table",
                     setting, model, type(exc).__name__)
            return self._from_table(setting, model)
        if info is None:
            return ModelCheck(setting, model, known_shutdown(model), SOURCE_API, not_found=True)
        if "shutdown_date" not in info:
            return self._from_table(setting, model)
        raw = info["shutdown_date"]
        if raw is None:
            return ModelCheck(setting, model, None, SOURCE_API)
        try:
            return ModelCheck(setting, model, dt.date.fromisoformat(str(raw)[:10]), SOURCE_API)
        except ValueError:
            log.info("model watch: OpenAI sent an unreadable shutdown_date for %s=%s; using the shipped table",
                     setting, model)
            return self._from_table(setting, model)

    @staticmethod
    def _from_table(setting: str, model: str) -> ModelCheck:
        return ModelCheck(setting, model, known_shutdown(model), SOURCE_TABLE)

    def _log(self, checks: list[ModelCheck]) -> None:
        today = self.today()
        for check in checks:
            state = check.state(today)
            source = "OpenAI API" if check.source == SOURCE_API else "shipped table"
            if state == "not_found":
                log.error("model watch: OpenAI says %s=%s does not exist (model_not_found: shut down, or not "
                          "available to this key); calls with it fail - choose a current model",
                          check.setting, check.model)
            elif state == "shut_down":
                log.error("model watch: %s=%s was shut down on %s (%s); calls with it fail - choose a current "
                          "model", check.setting, check.model, check.shutdown_date.isoformat(), source)
            elif state == "scheduled":
                log.warning("model watch: %s=%s shuts down on %s, in %d days (%s) - choose a current model "
                            "before then", check.setting, check.model, check.shutdown_date.isoformat(),
                            (check.shutdown_date - today).days, source)

    # -- what others read ------------------------------------------------------------------------
    def checks(self) -> list[ModelCheck]:
        with self._lock:
            return list(self._checks)

    def deprecations(self) -> list[dict]:
        """The configured models with a shutdown date or gone, for /health and the dashboard."""
        today = self.today()
        return [{"setting": c.setting, "model": c.model,
                 "shutdown_date": c.shutdown_date.isoformat() if c.shutdown_date else None,
                 "state": c.state(today)}
                for c in self.checks() if c.state(today)]

    def refusals(self) -> list[ModelCheck]:
        """Models whose absence OpenAI itself confirmed and that every turn needs."""
        return [c for c in self.checks()
                if c.not_found and c.source == SOURCE_API and c.setting in REFUSE_WHEN_GONE]

    # -- background ------------------------------------------------------------------------------
    def start(self, wait_seconds: float | None = None) -> None:
        """Check now and then daily in a daemon thread; wait at most ``wait_seconds``
        (default STARTUP_WAIT_SECONDS) for the first check, and raise ModelGone if, by then,
        OpenAI said a needed model is gone."""
        wait_seconds = STARTUP_WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._thread = threading.Thread(target=self._run, name="model-watch", daemon=True)
        self._thread.start()
        if not self._first_check_done.wait(wait_seconds):
            log.info("model watch: OpenAI did not answer within %.0f s; the check goes on in the background",
                     wait_seconds)
            return
        gone = self.refusals()
        if gone:
            self.stop()
            names = ", ".join(f"{c.setting}={c.model}" for c in gone)
            raise ModelGone(f"OpenAI says {names} does not exist (model_not_found): set a current model")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a broken check must not kill the daily loop
                log.exception("model watch: check failed")
            finally:
                self._first_check_done.set()
            self._stop.wait(self.interval_seconds)

    def stop(self) -> None:
        self._stop.set()


def start_model_watch(app, services) -> ModelWatch:
    """Attach a watch to ``app`` (``app.extensions["model_watch"]``, the template global
    ``model_deprecations``) and start it.

    The API is asked only where the inbox's background threads run (INBOX_ENABLED): an app
    built without them (maintenance, tests) checks the shipped table once and calls no one.
    """
    watch = ModelWatch(services.settings, services.openai)
    app.extensions["model_watch"] = watch
    app.add_template_global(watch.deprecations, "model_deprecations")
    if services.settings.start_workers:
        watch.start()
    else:
        watch.check(use_api=False)
    return watch


def current_deprecations() -> list[dict]:
    """The deprecations of the app handling the current request ([] if it has no watch)."""
    from flask import current_app

    watch = current_app.extensions.get("model_watch")
    return watch.deprecations() if watch is not None else []
