"""One logging set-up for the whole app.

Every line has a timestamp, level, logger, and the id of the work it belongs to in
brackets (the MessageSid, ``[SM…]``, in the webhooks; ``[turn=42]`` in the inbox and the
pipeline; ``[-]`` elsewhere) taken from a context variable,
so one message's story can be grepped across threads. Every line passes through
``redact``: no secret or full phone number reaches the logs. Uncaught exceptions in the
main thread and in any other thread are logged instead of lost.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading

from app.redaction import redact

_work_id: contextvars.ContextVar[str] = contextvars.ContextVar("work_id", default="-")
_configured = False


@contextlib.contextmanager
def work_context(work_id: str):
    """Tag every log line inside the block with ``work_id`` (a MessageSid or ``turn=N``)."""
    token = _work_id.set(work_id)
    try:
        yield
    finally:
        _work_id.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.work_id = _work_id.get()
        return True


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO") -> None:
    """Install the handler once per process; later calls only change the level."""
    global _configured
    root = logging.getLogger()
    root.setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s [%(name)s] [%(work_id)s] %(message)s")
    )
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    # Quiet libraries that log request lines with URLs and headers.
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "twilio.http_client", "werkzeug",
                  "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _install_excepthooks()
    _configured = True


def _install_excepthooks() -> None:
    log = logging.getLogger("app.uncaught")

    def sys_hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.critical("uncaught exception", exc_info=(exc_type, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs):
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        log.critical("uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = sys_hook
    threading.excepthook = thread_hook
