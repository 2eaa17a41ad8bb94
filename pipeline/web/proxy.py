"""The client's address behind a reverse proxy: X-Forwarded-For, trusted only from proxies.

The per-client sign-up limit (DOI-2) and the consent log (GDPR-1) need the address of
the person, not of the proxy in front of `syndicate serve`. X-Forwarded-For is a list
that every proxy appends to, and everything left of what our own proxy wrote is
whatever the client sent. So:

- a header from a peer that is not in `web.forwarded_allow_ips` is ignored (the
  default trusts nobody: `syndicate serve` facing the network directly);
- behind trusted proxies the client is the right-most hop that is not a trusted proxy:
  an attacker can put anything on the left, never on the right;
- the proxy must overwrite X-Forwarded-For with the address it saw (Caddy does by
  default; nginx: `proxy_set_header X-Forwarded-For $remote_addr;`), or append to it
  (`$proxy_add_x_forwarded_for`); both are read correctly here.

uvicorn's own proxy-header handling is switched off in `serve`, so that this one rule
applies however the app is run (and the tests exercise it through the ASGI client).
"""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger(__name__)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str):
    """An IP address from a header or scope entry ("1.2.3.4", "1.2.3.4:80", "[::1]:80"), or None."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TrustedProxies:
    """`web.forwarded_allow_ips`: addresses and networks, comma separated; '*' = any peer
    (then exactly one hop, the right-most, is taken from the header)."""

    def __init__(self, spec: str):
        items = [s.strip() for s in (spec or "").split(",") if s.strip()]
        self.any = "*" in items
        self.networks: list[_Network] = []
        for item in items:
            if item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                log.warning("web.forwarded_allow_ips: %r is not an address or network; ignored", item)

    def __bool__(self) -> bool:
        return self.any or bool(self.networks)

    def trusts(self, host: str | None) -> bool:
        if not host:
            return False
        if self.any:
            return True
        ip = _address(host)
        return ip is not None and any(ip in net for net in self.networks)

    def client(self, peer: str | None, forwarded_for: list[str]) -> str | None:
        """The client address for a connection from `peer` carrying these X-Forwarded-For
        values (in header order); `peer` itself when it is not a trusted proxy."""
        if not self.trusts(peer) or not forwarded_for:
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
        if not hops:
            return peer
        if self.any:
            hop = _address(hops[-1])
            return str(hop) if hop is not None else peer
        for hop_text in reversed(hops):
            hop = _address(hop_text)
            if hop is None:
                return peer  # garbage where an address belongs: do not guess past it
            if not any(hop in net for net in self.networks):
                return str(hop)
        return str(_address(hops[0]))  # every hop is one of our proxies


class ForwardedClientMiddleware:
    """ASGI middleware: set scope["client"] (and the scheme, from X-Forwarded-Proto) from
    a trusted proxy's headers, with the rule above."""

    def __init__(self, app, trusted: str):
        self.app = app
        self.trusted = TrustedProxies(trusted)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and self.trusted:
            client = scope.get("client")
            peer = client[0] if client else None
            if self.trusted.trusts(peer):
                forwarded = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-forwarded-for"]
                proto = [
                    v.decode("latin-1").split(",")[-1].strip().lower()
                    for k, v in scope.get("headers", [])
                    if k == b"x-forwarded-proto"
                ]
                host = self.trusted.client(peer, forwarded)
                scope = dict(scope)
                if host and host != peer:
                    scope["client"] = (host, 0)
                if proto and proto[-1] in ("http", "https"):
                    scope["scheme"] = proto[-1]
        await self.app(scope, receive, send)


__all__ = ["TrustedProxies", "ForwardedClientMiddleware"]
