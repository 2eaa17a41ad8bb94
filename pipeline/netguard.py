"""The SSRF guard (SW-7) every outbound fetch of a configured URL goes through: partner
pushes (pipeline.partners.http) and sources (pipeline.content.sources.http).

It refuses a URL whose host resolves to a loopback, private, link-local or otherwise
non-global address, unless the caller allows private addresses (`allow_private = true`
on the partner or source). It checks twice: when resolving (a clear error before
anything is sent), and on the connected socket's peer address before a byte is
written, so a DNS answer that changes between the two (DNS rebinding) cannot reach an
internal address either. Moved here from pipeline/partners/http.py so that content/
can use it without importing partners/ (arrows run one way).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class AddressRefused(Exception):
    """The SSRF guard refused to connect (SW-7)."""


def address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise AddressRefused if the URL is not http(s) or resolves to a non-global address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused(f"{url!r} is not an http(s) URL")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise requests.ConnectionError(f"cannot resolve {parts.hostname}: {exc}") from None
    bad = sorted({str(info[4][0]) for info in infos if not address_allowed(str(info[4][0]))})
    if bad:
        raise AddressRefused(
            f"{parts.hostname} resolves to {', '.join(bad)}, a private, loopback or link-local address"
        )


class _PeerCheck(HTTPConnection):
    """Checks the connected socket's peer before anything is written (the second check)."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = None
        if peer is None or not address_allowed(peer):
            sock.close()
            raise AddressRefused(f"{self.host} connected to {peer}, a private, loopback or link-local address")
        return sock


class GuardedHTTPConnection(_PeerCheck, HTTPConnection):
    pass


class GuardedHTTPSConnection(_PeerCheck, HTTPSConnection):
    pass


class GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}
