"""Forwarded headers are believed only from the proxies the operator configured.

Werkzeug's ``ProxyFix`` rewrites ``REMOTE_ADDR``, the scheme, host, port and script prefix
from ``X-Forwarded-*``. Applied unconditionally it lets any client choose its own address
(rotating X-Forwarded-For dodged the login limits) and its own public URL. So:

- neither TRUSTED_PROXY_COUNT nor TRUSTED_PROXIES set: no forwarded header is used at all;
- TRUSTED_PROXY_COUNT=N: the last N hops of each header are believed (N proxies in front);
- TRUSTED_PROXIES=addresses/networks: the headers are believed only on requests whose direct
  peer is one of them (TRUSTED_PROXY_COUNT hops, 1 when unset); anyone else is taken as is.
"""
from __future__ import annotations

import ipaddress
import logging

from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger(__name__)

_PEER = "REMOTE_ADDR"  # the WSGI key of the direct peer's address (not a setting)


class TrustedProxyFix:
    def __init__(self, wsgi_app, count: int, proxies: tuple[str, ...] = ()):
        self.wsgi_app = wsgi_app
        self.networks = [ipaddress.ip_network(p, strict=False) for p in proxies]
        hops = count or (1 if self.networks else 0)
        self.fixed = (ProxyFix(wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
                      if hops else None)
        self._warned = False

    def _peer_trusted(self, environ) -> bool:
        if not self.networks:
            return True
        try:
            peer = ipaddress.ip_address(environ.get(_PEER) or "")
        except ValueError:
            return False
        return any(peer in network for network in self.networks)

    def __call__(self, environ, start_response):
        if self.fixed is not None and self._peer_trusted(environ):
            return self.fixed(environ, start_response)
        if not self._warned and "HTTP_X_FORWARDED_FOR" in environ:
            # Behind a proxy nobody configured, client addresses all look like the proxy's
            # and (without PUBLIC_BASE_URL) Twilio's signatures fail: say so once.
            self._warned = True
            log.warning("X-Forwarded-* headers ignored: they come from an untrusted peer. Behind a proxy, "
                        "set TRUSTED_PROXY_COUNT (or TRUSTED_PROXIES).")
        return self.wsgi_app(environ, start_response)
