"""The only module that imports the Twilio SDK.

``TwilioGateway`` sends WhatsApp messages through the REST API (pointed at an emulator
by TWILIO_API_BASE_URL) and checks webhook signatures with Twilio's own
``RequestValidator``. Errors come back classified, with reasons safe to show operators.

Signatures: a webhook signed with a SharedKey carries
``X-Twilio-Webhooks-Signature-Settings: key=<keyId>,algorithm=<algorithm>``; it is checked
with that key's secret (TWILIO_WEBHOOK_SHARED_KEYS) and the algorithm named there, and a key
id we do not know is refused. Without a key in the header, the auth token signs (HMAC-SHA1,
or the algorithm the header names).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client

from app.clients.errors import GatewayError
from app.config import Settings
from app.redaction import redact

log = logging.getLogger(__name__)

SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


@dataclass
class SentMessage:
    sid: str
    status: str


class TwilioSendError(GatewayError):
    """Twilio did not accept a message (``kind``: unconfigured, refused, rate_limited, server,
    unreachable, malformed)."""

    provider = "twilio"


class TwilioGateway:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: Client | None = None
        if settings.twilio_account_sid and settings.twilio_auth_token:
            self._client = Client(
                settings.twilio_account_sid,
                settings.twilio_auth_token,
                http_client=TwilioHttpClient(timeout=15),
            )
            if settings.twilio_api_base_url:
                # The SDK joins this base with the path: the emulator serves the same paths
                # (the REST API, and the Messaging API's typing indicator).
                self._client.api.base_url = settings.twilio_api_base_url.rstrip("/")
                self._client.messaging.base_url = settings.twilio_api_base_url.rstrip("/")
        self._validator = RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None
        self._shared_key_validators = {key_id: RequestValidator(secret)
                                       for key_id, secret in settings.twilio_webhook_shared_keys}

    @property
    def available(self) -> bool:
        return self.settings.twilio_configured

    def send(self, to: str, *, body: str | None = None, media_url: str | None = None,
             status_callback: str | None = None, content_sid: str | None = None,
             content_variables: dict | None = None) -> SentMessage:
        """Send a free-form message, or a Content template (``content_sid``) outside the 24-hour window."""
        if not self.available:
            raise TwilioSendError("unconfigured", "Twilio is not configured", retryable=False)
        kwargs: dict = {"to": to, "from_": self.settings.twilio_phone_number}
        if content_sid:
            kwargs["content_sid"] = content_sid
            if content_variables:
                kwargs["content_variables"] = json.dumps(content_variables, ensure_ascii=False)
        elif body:
            kwargs["body"] = body
        if media_url:
            kwargs["media_url"] = [media_url]
        if status_callback:
            kwargs["status_callback"] = status_callback
        try:
            message = self._client.messages.create(**kwargs)
        except TwilioRestException as exc:
            # 429 and 5xx are Twilio's own trouble; 4xx (21211 bad number, 63016 outside the
            # 24 h window, 21617 too long) will fail the same way next time.
            kind = "rate_limited" if exc.status == 429 else "server" if exc.status >= 500 else "refused"
            reason = redact(f"Twilio {exc.status} error {exc.code}: {exc.msg}")
            raise TwilioSendError(kind, reason, retryable=kind != "refused", status=exc.status,
                                  code=str(exc.code) if exc.code else None) from exc
        except (TwilioException, OSError) as exc:
            raise TwilioSendError("unreachable", redact(f"Twilio unreachable: {type(exc).__name__}"), retryable=True) from exc
        except (ValueError, KeyError, TypeError) as exc:
            # A body that is not Twilio's JSON (a proxy's HTML page, a cut answer): the SDK's
            # own parsing error must not escape the gateway.
            raise TwilioSendError("malformed", f"Twilio sent a malformed answer ({type(exc).__name__})",
                                  retryable=True) from exc
        return SentMessage(sid=message.sid, status=message.status or "queued")

    def typing(self, message_sid: str) -> None:
        """Show "typing..." on the user's WhatsApp for the message we are answering (also marks it read).

        Twilio keeps the indicator for 25 s or until our reply arrives. Raises TwilioSendError.
        """
        if self._client is None:
            raise TwilioSendError("unconfigured", "Twilio is not configured", retryable=False)
        try:
            self._client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=message_sid)
        except TwilioRestException as exc:
            raise TwilioSendError("refused" if exc.status < 500 else "server",
                                  redact(f"Twilio {exc.status} error {exc.code} on the typing indicator: {exc.msg}"),
                                  retryable=exc.status >= 500, status=exc.status) from exc
        except (TwilioException, OSError) as exc:
            raise TwilioSendError("unreachable", redact(f"Twilio unreachable: {type(exc).__name__}"),
                                  retryable=True) from exc

    def find_sent(self, to: str, *, since: dt.datetime, body: str | None, with_media: bool) -> list[SentMessage]:
        """Our messages to ``to`` sent since ``since`` (naive UTC) with this body / media, newest first.

        For a send whose outcome we do not know (the process died, or the answer never
        arrived): Twilio's Messages list, filtered by To, From and DateSent, newest first,
        then - a queued message may carry no date_sent yet - the newest page by To and From
        alone, kept to messages created since ``since``. The Media resource does not say
        which URL a media came from, so a media part matches by having media and no body.
        """
        if not self.available:
            return []
        since_aware = since.replace(tzinfo=dt.timezone.utc)
        try:
            candidates = list(self._client.messages.list(
                to=to, from_=self.settings.twilio_phone_number, date_sent_after=since_aware, limit=50))
            candidates += [m for m in self._client.messages.list(
                to=to, from_=self.settings.twilio_phone_number, limit=50)
                if m.date_created is None or m.date_created >= since_aware]
        except TwilioRestException as exc:
            kind = "rate_limited" if exc.status == 429 else "server" if exc.status >= 500 else "refused"
            raise TwilioSendError(kind, redact(f"Twilio {exc.status} error {exc.code} listing messages: {exc.msg}"),
                                  retryable=kind != "refused", status=exc.status) from exc
        except (TwilioException, OSError) as exc:
            raise TwilioSendError("unreachable", redact(f"Twilio unreachable: {type(exc).__name__}"),
                                  retryable=True) from exc
        found: dict[str, SentMessage] = {}
        for message in candidates:
            if (message.direction or "").startswith("inbound") or message.sid in found:
                continue
            has_media = int(message.num_media or 0) > 0
            if (with_media and has_media and not (message.body or "").strip()) or (
                    not with_media and not has_media and (message.body or "") == (body or "")):
                found[message.sid] = SentMessage(sid=message.sid, status=message.status or "queued")
        return list(found.values())

    def signature_problem(self, url: str, params, signature: str | None,
                          settings_header: str | None) -> str | None:
        """Why X-Twilio-Signature does not prove the request is Twilio's, or None when it does.

        Computed exactly as Twilio does (``RequestValidator``): SHA-1, or the algorithm named in
        the signature-settings header; with the SharedKey that header names, else the auth token.
        """
        if not signature:
            return "missing X-Twilio-Signature"
        key_id = signature_key_id(settings_header)
        if key_id is not None:
            validator = self._shared_key_validators.get(key_id)
            if validator is None:
                return "unknown signing key"
        elif self._validator is None:
            return "no auth token to check X-Twilio-Signature"
        else:
            validator = self._validator
        algorithm = get_signature_algorithm(settings_header)
        if not validator.validate(url, params, signature, algorithm=algorithm):
            return "invalid X-Twilio-Signature"
        return None


def signature_key_id(settings_header: str | None) -> str | None:
    """The SharedKey id named in X-Twilio-Webhooks-Signature-Settings (``key=<id>,algorithm=…``).

    Parsed like the SDK's ``get_signature_algorithm`` reads ``algorithm``: comma-separated
    ``name=value`` parts, blanks stripped. None when the header names no key; ``""`` when it
    has a ``key=`` without a value (which matches no key, so it is refused).
    """
    for part in (settings_header or "").split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "key":
            return value.strip()
    return None
