"""VERP envelope senders signed with an HMAC (BNC-1).

Each message leaves with `bounces+<id>-<mac>@<bounce domain>`: `<id>` is the
delivery id in base 36 and `<mac>` the first 16 base32 characters (80 bits) of
HMAC-SHA256 over it with a key derived from the secret key for this purpose only.
A bounce to that address names its delivery (and so the subscriber) without parsing
any free text, and a forged or altered address names nothing. Lower case only, so a
relay that folds the local part's case does not break it; 40-odd characters, well
under the 64 a local part may have.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from email.utils import parseaddr

from pipeline.config import Settings
from pipeline.tokens import secret_key

PREFIX = "bounces"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_VERP = re.compile(rf"^{PREFIX}\+([0-9a-z]{{1,13}})-([a-z2-7]{{16}})@", re.IGNORECASE)


def _b36(n: int) -> str:
    if n < 0:
        raise ValueError("negative delivery id")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


_keys: dict[int, tuple[Settings, bytes]] = {}


def _key(settings: Settings) -> bytes:
    # derived once per Settings object (the secret may come from a file)
    cached = _keys.get(id(settings))
    if cached is None or cached[0] is not settings:
        key = hashlib.sha256(b"syndicate.verp:" + secret_key(settings).encode("utf-8")).digest()
        cached = _keys[id(settings)] = (settings, key)
    return cached[1]


def _mac(settings: Settings, ident: str) -> str:
    digest = hmac.digest(_key(settings), ident.encode("ascii"), "sha256")  # one C call per message
    return base64.b32encode(digest).decode("ascii")[:16].lower()


def bounce_domain(settings: Settings) -> str:
    if settings.email.bounce_domain:
        return str(settings.email.bounce_domain)
    address = parseaddr(settings.site.from_address or "")[1]
    return address.rpartition("@")[2] if "@" in address else ""


def encode(settings: Settings, delivery_id: int, domain: str | None = None) -> str:
    """The envelope sender for delivery `delivery_id`."""
    domain = domain or bounce_domain(settings)
    if not domain:
        return ""
    ident = _b36(int(delivery_id))
    return f"{PREFIX}+{ident}-{_mac(settings, ident)}@{domain}"


def decode(settings: Settings, address: str) -> int | None:
    """The delivery id a VERP address names, or None when it is not ours or forged."""
    address = parseaddr(address or "")[1] or (address or "")
    m = _VERP.match(address.strip())
    if not m:
        return None
    ident, mac = m.group(1).lower(), m.group(2).lower()
    if not hmac.compare_digest(mac, _mac(settings, ident)):
        return None
    return int(ident, 36)
