"""Twilio REST emulator for WhatsApp tests: 2010-04-01 Messages (create, fetch, list),
Media, and the Messaging v2 typing indicator.

Point the real SDK at it with ``client.api.base_url = fake.base_url`` (twilio 9.x builds
every Api URL from that Domain attribute at request time) and, for the typing indicator
(``https://messaging.twilio.com/v2/Indicators/Typing.json``), ``client.messaging.base_url =
fake.base_url``. It enforces what Twilio enforces synchronously (basic auth, required
fields, the 1,600-char body limit, WhatsApp channel pairing, one media per WhatsApp message,
ContentSid/ContentVariables shape), serves media behind auth + a 307 to an unauthenticated
"CDN" path, lists messages newest first with Twilio's paging envelope, and sends status
callbacks signed like Twilio does.

Knobs for tests (all reset by :meth:`TwilioFake.reset`):

* ``send_status``: status of the 201 to a send (any ``message_enum_status``), default
  ``"queued"`` (``"accepted"`` for a MessagingServiceSid send without From).
* ``on_accept``: a callable run with each accepted send's record before the 201 is answered.
* ``send_latency``: seconds to wait before answering a send; the message is stored first,
  so a client timeout during the wait is an "unknown outcome" with the message sent.
* :meth:`fail_sends`: the next N sends are refused with an HTTP status and Twilio error code.
* :meth:`drop_sends`: the next N sends are accepted (stored, listed) and then the connection is
  closed without an answer; the SDK raises ``TwilioException`` / ``requests.ConnectionError``.
* :meth:`close_window`: recipients whose 24-hour WhatsApp session is closed; a free-form send
  to them is refused (``closed_window_mode = "reject"``: 400 / 63016) or accepted and failed
  later (``"fail"``: 201, then status ``failed`` / 63016 as Twilio really does); a
  ContentSid (template) send is accepted.
* :meth:`send_counts`, :meth:`sends_per_recipient`, :meth:`sends_per_body`: exactly-once checks.
* ``typing_indicators``: every accepted typing-indicator call; faults via
  ``fail_next(..., path_contains="/Indicators/Typing")``.
"""
from __future__ import annotations

import base64
import itertools
import json
import mimetypes
import re
import secrets
import socket
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from email.utils import format_datetime
from urllib.parse import urlencode, urlparse

import requests
from twilio.request_validator import RequestValidator
from werkzeug.wrappers import Request, Response

from .base import FakeServer, json_response

API_VERSION = "2010-04-01"
DEFAULT_NUMBER = "whatsapp:+14155238886"  # the Twilio WhatsApp sandbox sender
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_MESSAGE_SID = re.compile(r"^(?:SM|MM)[0-9a-fA-F]{32}$")
_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")
# api.v2010.account.message's message_enum_status
MESSAGE_STATUSES = ("queued", "sending", "sent", "failed", "delivered", "undelivered", "receiving", "received",
                    "accepted", "scheduled", "read", "partially_delivered", "canceled")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


def _rfc2822(moment: datetime) -> str:
    """Twilio's date format: ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    return format_datetime(moment.astimezone(timezone.utc).replace(microsecond=0)).replace("-0000", "+0000")


def _parse_date_filter(value: str) -> tuple[datetime, bool]:
    """A DateSent filter value: ``YYYY-MM-DD`` (date only, True) or ISO 8601 as the SDK
    serialises datetimes, ``%Y-%m-%dT%H:%M:%SZ`` (False). Raises ValueError."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc), True
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), False


class _DroppedConnection(Exception):
    """Raised after the socket was shut: the server writes no answer."""


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _message_type(content_type: str) -> str:
    major = content_type.split("/", 1)[0]
    return major if major in ("audio", "image", "video") else "document"


class TwilioFake(FakeServer):
    def __init__(self, account_sid: str | None = None, auth_token: str = "test-auth-token-0123456789abcdef",
                 number: str = DEFAULT_NUMBER):
        super().__init__()
        self.account_sid = account_sid or _sid("AC")
        self.auth_token = auth_token
        self.number = number
        self.messaging_service_sid = _sid("MG")
        self._state_lock = threading.Lock()
        self._seq = itertools.count()
        self._init_state()

    def _init_state(self) -> None:
        self.sent: list[dict] = []
        self.messages: dict[str, dict] = {}  # sid -> API resource JSON
        self._order: dict[str, tuple[datetime, int]] = {}  # sid -> (date_sent or date_created, sequence)
        self._media_of: dict[str, list[dict]] = {}  # message sid -> Media resources
        self._callbacks: dict[str, str] = {}  # sid -> StatusCallback URL
        self.media: dict[str, tuple[bytes, str]] = {}  # media path -> (bytes, content type)
        self._cdn: dict[str, tuple[bytes, str]] = {}  # token -> (bytes, content type)
        self.senders = {self.number}  # From addresses this account may send from
        self.typing_indicators: list[dict] = []  # {"channel", "message_id", "at"} per accepted call
        # -- knobs (see the module docstring) --
        self.send_status: str | None = None
        self.send_latency = 0.0
        self.closed_windows: set[str] = set()
        self.closed_window_mode = "reject"
        self._send_faults: list[list] = []  # [status, code, message, times]
        self._drops = 0
        # Called with the stored message record after a send is accepted, before the 201 goes
        # back: a crash test kills the app there ("Twilio accepted it, we never heard").
        self.on_accept = None

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self._init_state()

    @property
    def _account_path(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}"

    # -- knobs ---------------------------------------------------------------------
    def fail_sends(self, status: int = 500, code: int | None = None, times: int = 1,
                   message: str | None = None) -> None:
        """Refuse the next ``times`` sends (POST Messages.json) with ``status`` and Twilio
        error ``code`` (default per status: 400 -> 21211, 429 -> 20429, 500 -> 20500, ...).
        A refused send is not stored."""
        with self._state_lock:
            self._send_faults.append([status, code, message, times])

    def drop_sends(self, times: int = 1) -> None:
        """Accept the next ``times`` sends (stored, in ``sent`` and the list), then close the
        connection without answering: the caller cannot know the outcome."""
        with self._state_lock:
            self._drops += times

    def close_window(self, *recipients: str) -> None:
        """Mark ``recipients`` (``whatsapp:+55...``) as outside the 24-hour session window."""
        self.closed_windows.update(recipients)

    def open_window(self, *recipients: str) -> None:
        self.closed_windows.difference_update(recipients)

    def send_counts(self, to: str | None = None, body: str | None = None) -> int:
        """How many accepted sends match ``to`` and/or ``body`` (None matches any)."""
        with self._state_lock:
            return sum(1 for m in self.sent if (to is None or m["to"] == to) and (body is None or m["body"] == body))

    def sends_per_recipient(self) -> Counter:
        with self._state_lock:
            return Counter(m["to"] for m in self.sent)

    def sends_per_body(self) -> Counter:
        with self._state_lock:
            return Counter(m["body"] for m in self.sent)

    def add_message(self, to: str, body: str = "", from_: str | None = None, *, date_sent: datetime | None = None,
                    status: str = "delivered", direction: str = "outbound-api", media_urls: tuple = ()) -> dict:
        """Store a message as if it had been sent earlier (for list/reconciliation tests)."""
        moment = date_sent or datetime.now(timezone.utc)
        with self._state_lock:
            return self._store(to, from_ or self.number, body, list(media_urls), None, status, direction, moment)

    # -- errors --------------------------------------------------------------------
    _MESSAGES = {400: (21211, "Bad request"), 401: (20003, "Authenticate"),
                 404: (20404, "The requested resource was not found"),
                 429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error"),
                 503: (20503, "Service Unavailable")}

    def error_body(self, status: int, message: str | None = None, code: int | None = None):
        default_code, default_message = self._MESSAGES.get(status, (status * 100, "Error"))
        code = code or default_code
        return {"code": code, "message": message or default_message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}, {}

    def _error(self, status: int, code: int, message: str) -> Response:
        return json_response(self.error_body(status, message, code)[0], status)

    def _authorized(self, request: Request) -> bool:
        auth = request.authorization
        return (auth is not None and auth.type == "basic"
                and auth.username == self.account_sid and auth.password == self.auth_token)

    # -- routing -------------------------------------------------------------------
    def _wsgi(self, environ, start_response):
        try:
            return super()._wsgi(environ, start_response)
        except _DroppedConnection:
            # The socket is shut: werkzeug's write fails with a ConnectionError, which it takes
            # for a client that went away; the client sees the connection closed, no status line.
            start_response("201 CREATED", [("Content-Length", "0")])
            return []

    def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/cdn/"):
            return self._cdn_get(path[len("/cdn/"):])
        if path == "/v2/Indicators/Typing.json":
            if not self._authorized(request):
                return self._error(401, 20003, "Authenticate")
            if request.method != "POST":
                return self._error(405, 20004, "Method not allowed")
            return self._typing(request)
        match = re.fullmatch(rf"/{API_VERSION}/Accounts/([^/]+)(/.*)", path)
        if not match:
            return self._error(404, 20404, f"The requested resource {path} was not found")
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        if match.group(1) != self.account_sid:
            # Valid credentials for another account: Twilio answers 20003 too.
            return self._error(401, 20003, "Authenticate")
        rest = match.group(2)
        if rest == "/Messages.json" and request.method == "POST":
            return self._create_message(request)
        if rest == "/Messages.json" and request.method == "GET":
            return self._list_messages(request)
        m = re.fullmatch(r"/Messages/((?:SM|MM)[0-9a-f]{32})\.json", rest)
        if m and request.method == "GET":
            message = self.messages.get(m.group(1))
            if message:
                return json_response(message)
        m = re.fullmatch(r"/Messages/((?:SM|MM)[0-9a-f]{32})/Media\.json", rest)
        if m and request.method == "GET" and m.group(1) in self.messages:
            return self._list_media(request, m.group(1))
        m = re.fullmatch(r"/Messages/((?:SM|MM)[0-9a-f]{32})/Media/(ME[0-9a-f]{32})\.json", rest)
        if m and request.method == "GET":
            item = next((x for x in self._media_of.get(m.group(1), []) if x["sid"] == m.group(2)), None)
            if item:
                return json_response(item)
        if request.method == "GET" and path in self.media:
            token = secrets.token_urlsafe(24)
            with self._state_lock:
                self._cdn[token] = self.media[path]
            return Response(status=307, headers={"Location": f"{self.base_url}/cdn/{token}"})
        return self._error(404, 20404, f"The requested resource {path} was not found")

    # -- messages ------------------------------------------------------------------
    def _store(self, to, from_, body, media_urls, service_sid, status, direction, moment,
               content_sid=None, content_variables=None, callback=None, error=None) -> dict:
        """Create a Message resource (caller holds ``_state_lock``) and return the ``sent`` record."""
        sid = _sid("SM")  # outbound API messages are SM even with media
        when = _rfc2822(moment)
        uri = f"{self._account_path}/Messages/{sid}.json"
        message = {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": body or "",
            "date_created": when, "date_sent": when, "date_updated": when, "direction": direction,
            "error_code": error[0] if error else None, "error_message": error[1] if error else None,
            "from": from_ or None, "messaging_service_sid": service_sid, "num_media": str(len(media_urls)),
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid, "status": status,
            "subresource_uris": {"media": f"{self._account_path}/Messages/{sid}/Media.json",
                                 "feedback": f"{self._account_path}/Messages/{sid}/Feedback.json"},
            "to": to, "uri": uri,
        }
        self.messages[sid] = message
        self._order[sid] = (moment, next(self._seq))
        self._media_of[sid] = [self._media_resource(sid, url, when) for url in media_urls]
        if callback:
            self._callbacks[sid] = callback
        record = {"sid": sid, "to": to, "from_": from_ or None, "body": body,
                  "media_url": media_urls[0] if len(media_urls) == 1 else (media_urls or None),
                  "status_callback": callback, "messaging_service_sid": service_sid,
                  "content_sid": content_sid, "content_variables": content_variables}
        self.sent.append(record)
        return record

    def _media_resource(self, message_sid: str, url: str, when: str) -> dict:
        media_sid = _sid("ME")
        content_type = mimetypes.guess_type(urlparse(url).path)[0] or "application/octet-stream"
        return {"account_sid": self.account_sid, "content_type": content_type, "date_created": when,
                "date_updated": when, "parent_sid": message_sid, "sid": media_sid,
                "uri": f"{self._account_path}/Messages/{message_sid}/Media/{media_sid}.json"}

    def _create_message(self, request: Request) -> Response:
        form = request.form
        to, from_ = form.get("To", ""), form.get("From", "")
        service_sid = form.get("MessagingServiceSid")
        body = form.get("Body")
        media_urls = form.getlist("MediaUrl")
        callback = form.get("StatusCallback")
        content_sid = form.get("ContentSid")
        content_variables = form.get("ContentVariables")
        with self._state_lock:
            fault = self._send_faults[0] if self._send_faults else None
            if fault:
                fault[3] -= 1
                if fault[3] <= 0:
                    self._send_faults.pop(0)
        if fault:
            status, code, message, _ = fault
            body_json, _ = self.error_body(status, message, code)
            return json_response(body_json, status)
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service_sid:
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls and not content_sid:
            return self._error(400, 21602, "Message body is required.")
        if body and len(body) > 1600:
            return self._error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if content_sid is not None and not _CONTENT_SID.match(content_sid):
            return self._error(400, 21655, "The ContentSid is Invalid.")
        if content_variables is not None:
            try:
                variables = json.loads(content_variables)
            except ValueError:
                variables = None
            if not isinstance(variables, dict):
                return self._error(400, 21656, "The ContentVariables Parameter is invalid.")
        to_whatsapp = to.startswith("whatsapp:")
        if from_ and to_whatsapp != from_.startswith("whatsapp:"):
            return self._error(400, 21910, "Invalid From and To pair. From and To should be of the same channel.")
        if not _E164.match(to.removeprefix("whatsapp:")):
            return self._error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if from_ and from_ not in self.senders:
            if to_whatsapp:
                return self._error(400, 63007, "Twilio could not find a Channel with the specified From address")
            return self._error(400, 21606, f"The From phone number {from_} is not a valid, "
                                           "message-capable Twilio phone number for this account.")
        if to_whatsapp and len(media_urls) > 1:
            return self._error(400, 21623, "Number of media files exceeds allowed limit. "
                                           "WhatsApp messages accept one MediaUrl.")
        for url in media_urls:
            if urlparse(url).scheme not in ("http", "https"):
                return self._error(400, 21620, f"Invalid media URL(s): {url}")
        if callback and urlparse(callback).scheme not in ("http", "https"):
            return self._error(400, 21609, f"Invalid StatusCallback url: {callback}")
        window_error = None
        if to in self.closed_windows and not content_sid:
            window_error = (63016, "Failed to send freeform message because you are outside the allowed window. "
                                   "If you are using WhatsApp, please use a Message Template.")
            if self.closed_window_mode == "reject":
                return self._error(400, *window_error)

        if self.send_status is not None and self.send_status not in MESSAGE_STATUSES:
            return self._error(500, 20500, f"TwilioFake.send_status {self.send_status!r} is not a message status")
        status = self.send_status or ("accepted" if service_sid and not from_ else "queued")
        with self._state_lock:
            record = self._store(to, from_, body, media_urls, service_sid, status, "outbound-api",
                                 datetime.now(timezone.utc), content_sid, content_variables, callback)
            message = dict(self.messages[record["sid"]])
            if window_error:  # accepted, then failed by WhatsApp: visible on fetch/list and in callbacks
                self.messages[record["sid"]].update(status="failed", error_code=window_error[0],
                                                    error_message=window_error[1])
            drop = self._drops > 0
            if drop:
                self._drops -= 1
        if self.on_accept is not None:
            self.on_accept(record)
        if self.send_latency:
            time.sleep(self.send_latency)
        if drop:
            self._drop_connection(request)
        return json_response(message, 201)

    @staticmethod
    def _drop_connection(request: Request) -> None:
        sock = request.environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise _DroppedConnection

    # -- list ------------------------------------------------------------------------
    def _page_params(self, request: Request) -> tuple[int, int, str | None] | Response:
        try:
            page_size = int(request.args.get("PageSize", DEFAULT_PAGE_SIZE))
            page = int(request.args.get("Page", 0))
        except ValueError:
            return self._error(400, 20001, "Invalid paging parameter")
        if not 1 <= page_size <= MAX_PAGE_SIZE or page < 0:
            return self._error(400, 20001, f"PageSize must be between 1 and {MAX_PAGE_SIZE}")
        return page_size, page, request.args.get("PageToken")

    @staticmethod
    def _envelope(key: str, base_path: str, filters: dict, token: str | None, items: list, page: int,
                  page_size: int, offset: int, total: int) -> dict:
        def uri(page_number: int, token: str | None = None) -> str:
            query = dict(filters, PageSize=page_size, Page=page_number)
            if token:
                query["PageToken"] = token
            return f"{base_path}?{urlencode(query)}"

        current = uri(page, token)
        has_next = offset + len(items) < total
        next_uri = uri(page + 1, "PA" + items[-1]["sid"]) if has_next and items else None
        prev_uri = uri(page - 1, "PB" + items[0]["sid"]) if page > 0 and items else None
        return {key: items, "page": page, "page_size": page_size, "first_page_uri": uri(0),
                "next_page_uri": next_uri, "previous_page_uri": prev_uri, "uri": current,
                "start": offset, "end": offset + max(len(items), 1) - 1}

    @staticmethod
    def _slice(ordered: list, sid_of, page: int, page_size: int, token: str | None) -> tuple[list, int] | None:
        """Items of one page: after ``PA<sid>`` / before ``PB<sid>`` when a token is given, else
        by ``Page`` offset. None for an unknown token."""
        if token:
            sids = [sid_of(x) for x in ordered]
            if token[2:] not in sids or token[:2] not in ("PA", "PB"):
                return None
            index = sids.index(token[2:])
            if token[:2] == "PA":
                return ordered[index + 1:index + 1 + page_size], index + 1
            start = max(0, index - page_size)
            return ordered[start:index], start
        return ordered[page * page_size:(page + 1) * page_size], page * page_size

    def _list_messages(self, request: Request) -> Response:
        params = self._page_params(request)
        if isinstance(params, Response):
            return params
        page_size, page, token = params
        filters: dict = {}
        for name in ("To", "From", "DateSent", "DateSent<", "DateSent>"):
            if name in request.args:
                filters[name] = request.args[name]
        bounds = []
        for name, op in (("DateSent", "=="), ("DateSent<", "<="), ("DateSent>", ">=")):
            if name in filters:
                try:
                    bounds.append((op, *_parse_date_filter(filters[name])))
                except ValueError:
                    return self._error(400, 20001, f"Invalid {name}: {filters[name]}")

        def keep(sid: str) -> bool:
            message = self.messages[sid]
            if "To" in filters and message["to"] != filters["To"]:
                return False
            if "From" in filters and message["from"] != filters["From"]:
                return False
            moment = self._order[sid][0]
            for op, value, date_only in bounds:
                # DateSent matches the (UTC) day; DateSent< / DateSent> are inclusive bounds, to the
                # second when the SDK sent a datetime (%Y-%m-%dT%H:%M:%SZ), to the day for a date.
                by_day = date_only or op == "=="
                left, right = (moment.date(), value.date()) if by_day else (moment.replace(microsecond=0), value)
                if not {"==": left == right, "<=": left <= right, ">=": left >= right}[op]:
                    return False
            return True

        with self._state_lock:
            ordered = sorted((sid for sid in self.messages if keep(sid)), key=self._order.__getitem__, reverse=True)
            ordered = [dict(self.messages[sid]) for sid in ordered]
        sliced = self._slice(ordered, lambda m: m["sid"], page, page_size, token)
        if sliced is None:
            return self._error(400, 20001, f"Invalid PageToken: {token}")
        items, offset = sliced
        return json_response(self._envelope("messages", f"{self._account_path}/Messages.json", filters, token, items,
                                            page, page_size, offset, len(ordered)))

    def _list_media(self, request: Request, message_sid: str) -> Response:
        params = self._page_params(request)
        if isinstance(params, Response):
            return params
        page_size, page, token = params
        with self._state_lock:
            ordered = [dict(x) for x in self._media_of.get(message_sid, [])]
        sliced = self._slice(ordered, lambda m: m["sid"], page, page_size, token)
        if sliced is None:
            return self._error(400, 20001, f"Invalid PageToken: {token}")
        items, offset = sliced
        return json_response(self._envelope("media_list", f"{self._account_path}/Messages/{message_sid}/Media.json",
                                            {}, token, items, page, page_size, offset, len(ordered)))

    # -- typing indicator (messaging.twilio.com/v2) ------------------------------------
    def _typing(self, request: Request) -> Response:
        channel, message_id = request.form.get("channel"), request.form.get("messageId")
        if not channel:
            return self._error(400, 20001, "Missing required parameter channel in the post body")
        if channel != "whatsapp":
            return self._error(400, 20001, f"Invalid channel: {channel}. Only 'whatsapp' is supported.")
        if not message_id:
            return self._error(400, 20001, "Missing required parameter messageId in the post body")
        if not _MESSAGE_SID.match(message_id):
            return self._error(400, 20001, f"Invalid messageId: {message_id}. Expected a Message SID (SM/MM).")
        with self._state_lock:
            self.typing_indicators.append({"channel": channel, "message_id": message_id, "at": time.time()})
        return json_response({"success": True})

    # -- media -----------------------------------------------------------------------
    def add_media(self, content: bytes, content_type: str) -> str:
        """Host ``content`` like an inbound WhatsApp attachment; returns its MediaUrl."""
        path = f"{self._account_path}/Messages/{_sid('MM')}/Media/{_sid('ME')}"
        with self._state_lock:
            self.media[path] = (content, content_type)
        return self.base_url + path

    def _cdn_get(self, token: str) -> Response:
        item = self._cdn.get(token)
        if item is None:
            # Twilio's CDN answers expired/unknown links with an S3-style 403.
            return Response("<Error><Code>AccessDenied</Code></Error>", status=403, content_type="application/xml")
        content, content_type = item
        return Response(content, content_type=content_type, headers={"Content-Length": str(len(content))})

    # -- webhooks ---------------------------------------------------------------------
    def sign(self, url: str, params: dict) -> str:
        return RequestValidator(self.auth_token).compute_signature(url, params)

    def status_callback(self, sid: str, status: str, error_code: int | None = None,
                        error_message: str | None = None) -> tuple[str, dict, dict]:
        """(url, form, headers) of the status callback Twilio would send; for Flask test clients."""
        message = self.messages[sid]
        url = self._callbacks.get(sid)
        if not url:
            raise ValueError(f"message {sid} was sent without a StatusCallback")
        form = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
                "AccountSid": self.account_sid, "From": message["from"] or self.number, "To": message["to"],
                "ApiVersion": API_VERSION}
        if "whatsapp:" in message["to"]:
            form["ChannelToAddress"] = message["to"].removeprefix("whatsapp:")
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        if error_message is not None:
            form["ErrorMessage"] = error_message
        with self._state_lock:
            message["status"] = status
            message["date_updated"] = _rfc2822(datetime.now(timezone.utc))
            if error_code is not None:
                message["error_code"], message["error_message"] = int(error_code), error_message
        # Twilio retries callbacks with the same idempotency token; receivers may dedupe on it.
        return url, form, {"X-Twilio-Signature": self.sign(url, form), "I-Twilio-Idempotency-Token": secrets.token_hex(16)}

    def deliver(self, sid: str, status: str, error_code: int | None = None, error_message: str | None = None,
                timeout: float = 15.0) -> requests.Response:
        """POST the signed status callback for ``sid`` (only to a local address)."""
        url, form, headers = self.status_callback(sid, status, error_code, error_message)
        if urlparse(url).hostname not in _LOCAL_HOSTS:
            raise ValueError(f"refusing to call a non-local StatusCallback: {url}")
        headers["User-Agent"] = "TwilioProxy/1.1"
        return requests.post(url, data=form, headers=headers, timeout=timeout)

    def inbound_form(self, from_: str = "whatsapp:+5511999990001", body: str = "Oi", message_sid: str | None = None,
                     media: tuple | None = None, profile_name: str = "Ana", **extra) -> dict:
        """An inbound WhatsApp webhook form as Twilio posts it. ``media`` is (url, content_type) or
        (bytes, content_type), the latter hosted with :meth:`add_media` first."""
        sid = message_sid or _sid("MM" if media else "SM")
        form = {
            "SmsMessageSid": sid, "NumMedia": "0", "ProfileName": profile_name, "MessageType": "text",
            "SmsSid": sid, "WaId": from_.removeprefix("whatsapp:").lstrip("+"), "SmsStatus": "received",
            "Body": body, "To": self.number, "MessagingServiceSid": self.messaging_service_sid,
            "NumSegments": "1", "ReferralNumMedia": "0", "MessageSid": sid, "AccountSid": self.account_sid,
            "ChannelMetadata": '{"type":"whatsapp","data":{"context":{"ProfileName":"%s","WaId":"%s"}}}'
                               % (profile_name, from_.removeprefix("whatsapp:").lstrip("+")),
            "From": from_, "ApiVersion": API_VERSION,
        }
        if media:
            url, content_type = media
            if isinstance(url, bytes):
                url = self.add_media(url, content_type)
            form.update(NumMedia="1", MediaUrl0=url, MediaContentType0=content_type,
                        MessageType=_message_type(content_type))
        form.update({k: str(v) for k, v in extra.items()})
        return form

    def basic_auth_header(self) -> str:
        """``Authorization`` header value for the account, for raw HTTP tests."""
        token = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return f"Basic {token}"
