"""Twilio REST (2010-04-01 Messages + Media) emulator for WhatsApp tests.

Point the real SDK at it with ``client.api.base_url = fake.base_url`` (twilio 9.x builds
every Api URL from that Domain attribute at request time). It enforces what Twilio
enforces synchronously (basic auth, required fields, the 1,600-char body limit, WhatsApp
channel pairing, one media per WhatsApp message), serves media behind auth + a 307 to an
unauthenticated "CDN" path, and sends status callbacks signed like Twilio does.
"""
from __future__ import annotations

import base64
import re
import secrets
import threading
from email.utils import formatdate
from urllib.parse import urlparse

import requests
from twilio.request_validator import RequestValidator
from werkzeug.wrappers import Request, Response

from .base import FakeServer, json_response

API_VERSION = "2010-04-01"
DEFAULT_NUMBER = "whatsapp:+14155238886"  # the Twilio WhatsApp sandbox sender
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


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
        self._init_state()

    def _init_state(self) -> None:
        self.sent: list[dict] = []
        self.messages: dict[str, dict] = {}  # sid -> API resource JSON
        self._callbacks: dict[str, str] = {}  # sid -> StatusCallback URL
        self.media: dict[str, tuple[bytes, str]] = {}  # media path -> (bytes, content type)
        self._cdn: dict[str, tuple[bytes, str]] = {}  # token -> (bytes, content type)
        self.senders = {self.number}  # From addresses this account may send from

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self._init_state()

    @property
    def _account_path(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}"

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
    def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/cdn/"):
            return self._cdn_get(path[len("/cdn/"):])
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
        m = re.fullmatch(r"/Messages/((?:SM|MM)[0-9a-f]{32})\.json", rest)
        if m and request.method == "GET":
            message = self.messages.get(m.group(1))
            if message:
                return json_response(message)
        if request.method == "GET" and path in self.media:
            token = secrets.token_urlsafe(24)
            with self._state_lock:
                self._cdn[token] = self.media[path]
            return Response(status=307, headers={"Location": f"{self.base_url}/cdn/{token}"})
        return self._error(404, 20404, f"The requested resource {path} was not found")

    # -- messages ------------------------------------------------------------------
    def _create_message(self, request: Request) -> Response:
        form = request.form
        to, from_ = form.get("To", ""), form.get("From", "")
        service_sid = form.get("MessagingServiceSid")
        body = form.get("Body")
        media_urls = form.getlist("MediaUrl")
        callback = form.get("StatusCallback")
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service_sid:
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls and not form.get("ContentSid"):
            return self._error(400, 21602, "Message body is required.")
        if body and len(body) > 1600:
            return self._error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
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

        sid = _sid("SM")  # outbound API messages are SM even with media
        now = formatdate(usegmt=False).replace("-0000", "+0000")
        uri = f"{self._account_path}/Messages/{sid}.json"
        message = {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": body or "",
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": from_ or None,
            "messaging_service_sid": service_sid, "num_media": str(len(media_urls)), "num_segments": "1",
            "price": None, "price_unit": "USD", "sid": sid, "status": "accepted" if service_sid and not from_
            else "queued", "subresource_uris": {"media": f"{self._account_path}/Messages/{sid}/Media.json"},
            "to": to, "uri": uri,
        }
        with self._state_lock:
            self.messages[sid] = message
            if callback:
                self._callbacks[sid] = callback
            self.sent.append({"sid": sid, "to": to, "from_": from_ or None, "body": body,
                              "media_url": media_urls[0] if len(media_urls) == 1 else (media_urls or None),
                              "status_callback": callback, "messaging_service_sid": service_sid})
        return json_response(message, 201)

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
