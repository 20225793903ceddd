"""Shared machinery for the provider emulators: a real HTTP server on 127.0.0.1.

The emulators are served over a real socket (not mocked transports) so that the
real SDKs - with their own HTTP stacks, retries and parsers - talk to them exactly
as they would to the provider. Every request is recorded; faults can be queued.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class CaseInsensitiveDict(dict):
    """Header dict: keys stored lower-cased, so ``h["Authorization"] == h.get("authorization")``."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it. ``form`` values are str, or a list when repeated."""

    method: str
    path: str
    query: dict
    headers: CaseInsensitiveDict
    body: bytes
    form: dict | None = None
    json: Any = None
    files: dict = field(default_factory=dict)


@dataclass
class _Fault:
    status: int
    body: Any
    headers: dict | None
    times: int
    path_contains: str | None
    delay: float
    raw_body: bytes | None


class _QuietHandler(WSGIRequestHandler):
    """No access log: test output should show the test's own logs, not every fake request."""

    def log_request(self, *args, **kwargs) -> None:
        pass


def _flatten(multidict) -> dict:
    return {k: (v[0] if len(v) == 1 else v) for k, v in multidict.lists()}


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(obj), status=status, headers=headers, content_type="application/json")


class FakeServer:
    """Base emulator. Subclasses implement ``handle(request)`` and ``error_body(status)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self.latency = 0.0
        self.path_latency: dict[str, float] = {}
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "FakeServer":
        if self._server is None:
            self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True,
                                       request_handler=_QuietHandler)
            self.base_url = f"http://127.0.0.1:{self._server.server_port}"
            # A short poll interval makes stop() (shutdown) return in ~50 ms instead of 0.5 s.
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            daemon=True, name=type(self).__name__)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- recording and faults ----------------------------------------------------
    def reset(self) -> None:
        """Forget recorded requests and queued faults; subclasses also restore their defaults."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.latency = 0.0
            self.path_latency = {}

    def requests_to(self, path_substring: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if path_substring in r.path]

    def fail_next(self, status: int = 500, body: Any = None, headers: dict | None = None, times: int = 1,
                  path_contains: str | None = None, delay: float = 0.0, raw_body: bytes | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` and a provider-shaped error
        body (or ``body``, or the exact bytes ``raw_body``), after sleeping ``delay`` seconds."""
        with self._lock:
            self._faults.append(_Fault(status, body, headers, times, path_contains, delay, raw_body))

    def set_latency(self, seconds: float, path_contains: str | None = None) -> None:
        """Delay successful answers (all, or those whose path contains ``path_contains``),
        to benchmark against realistic provider times."""
        if path_contains is None:
            self.latency = seconds
        else:
            self.path_latency[path_contains] = seconds

    def error_body(self, status: int, message: str | None = None) -> tuple[Any, dict]:
        """Provider-shaped (body, extra headers) for an error status. Subclasses override."""
        return {"status": status, "message": message or "error"}, {}

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    # -- WSGI --------------------------------------------------------------------
    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_contains is None or fault.path_contains in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: Request) -> RecordedRequest:
        body = request.get_data(cache=True)  # cached, so form parsing below still works
        form, files, parsed_json = None, {}, None
        mimetype = request.mimetype
        if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = _flatten(request.form)
            files = {name: (f.filename, f.mimetype, f.read()) for name, f in request.files.items()}
            for f in request.files.values():
                f.stream.seek(0)  # the handler reads the upload again
        elif mimetype == "application/json" or mimetype.endswith("+json"):
            try:
                parsed_json = json.loads(body or b"null")
            except ValueError:
                parsed_json = None
        recorded = RecordedRequest(request.method, request.path, _flatten(request.args),
                                   CaseInsensitiveDict(request.headers.items()), body, form, parsed_json, files)
        with self._lock:
            self.requests.append(recorded)
        return recorded

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        try:
            self._record(request)
            fault = self._take_fault(request.path)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                response = self._fault_response(fault)
            else:
                response = self._dispatch(request)
        finally:
            request.close()  # closes spooled multipart uploads; handlers have read them already
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        response = self.handle(request)
        if response.status_code < 400:
            delay = next((s for p, s in self.path_latency.items() if p in request.path), self.latency)
            if delay:
                time.sleep(delay)
        return response

    def _fault_response(self, fault: _Fault) -> Response:
        default_body, default_headers = self.error_body(fault.status)
        headers = dict(default_headers if fault.headers is None else fault.headers)
        if fault.raw_body is not None:
            return Response(fault.raw_body, status=fault.status, headers=headers, content_type="application/json")
        body = default_body if fault.body is None else fault.body
        if isinstance(body, (bytes, str)):
            return Response(body, status=fault.status, headers=headers)
        return json_response(body, fault.status, headers)

