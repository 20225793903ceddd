"""The team's notification webhook (HANDOFF_NOTIFY_WEBHOOK_URL): one POST of Slack-compatible JSON.

``{"text": ...}`` is what Slack incoming webhooks, Discord's ``/slack`` endpoint, Mattermost
and Teams workflows accept. The request goes to the configured URL and nowhere else:
redirects are not followed (a redirect is reported as a failure), so a compromised
receiver cannot bounce our message to another host. Errors come back as ``WebhookError``
(a ``GatewayError``) whose reason never contains the URL, which may embed a secret token.
"""
from __future__ import annotations

import requests

from app.clients.errors import GatewayError

TIMEOUT_SECONDS = 5.0


class WebhookError(GatewayError):
    provider = "webhook"


def post_text(url: str, text: str, timeout: float = TIMEOUT_SECONDS) -> int:
    """POST ``{"text": text}`` to ``url``; the HTTP status on a 2xx, WebhookError otherwise."""
    try:
        response = requests.post(url, json={"text": text}, timeout=timeout, allow_redirects=False,
                                 headers={"User-Agent": "endrigo-digital/handoff-notify"})
    except requests.RequestException as exc:
        raise WebhookError("unreachable", f"webhook unreachable: {type(exc).__name__}", retryable=True) from exc
    if 200 <= response.status_code < 300:
        return response.status_code
    retryable = response.status_code == 429 or response.status_code >= 500 or 300 <= response.status_code < 400
    raise WebhookError("refused", f"webhook answered HTTP {response.status_code}", retryable=retryable,
                       status=response.status_code)
