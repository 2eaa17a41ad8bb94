"""The links in every email, and the tokens in them.

- confirmation: ``/confirm/<token>``; the token is ``tokens.sign("confirm", nonce)``
  where the 256-bit nonce sits in the outbox payload and only the SHA-256 of the whole
  token is stored, so a database read alone cannot confirm anybody. Single use,
  expires after ``subscribers.confirm_ttl_hours`` (pipeline.subscribers.state).
- unsubscribe / preferences: ``/unsubscribe/<token>``, ``/preferences/<token>`` with
  the UNS-1 token: ``<key id>.<subscriber id>.<HMAC-SHA256 tag>`` over
  ``"<key id>|<subscriber id>|<list id>|<purpose>"``, no expiry, verified with
  ``hmac.compare_digest``; keys in ``security.previous_secret_keys`` still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from urllib.parse import urlsplit

from pipeline import tokens
from pipeline.config import Settings
from pipeline.errors import TokenError

_LIST_PURPOSES = ("unsubscribe", "preferences")


def _key_id(key: str) -> str:
    return hashlib.sha256(("syndicate.key-id|" + key).encode("utf-8")).hexdigest()[:8]


def _keys(settings: Settings) -> list[str]:
    return [tokens.secret_key(settings), *settings.security.previous_secret_keys]


def list_id(settings: Settings) -> str:
    """The list's id for tokens and the List-Id header: `site.list_id`'s <...> part,
    else derived from base_url's host."""
    configured = settings.site.list_id
    if configured:
        m = re.search(r"<([^>]+)>", configured)
        return (m.group(1) if m else configured).strip()
    host = urlsplit(settings.site.base_url).hostname or "localhost"
    return f"digest.{host}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: str, kid: str, subscriber_id: int, lst: str, purpose: str) -> bytes:
    message = f"{kid}|{subscriber_id}|{lst}|{purpose}".encode()
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()


class ListLinks:
    """The UNS-1 tokens and the unsubscribe / preferences links of many subscribers, with
    the key, its id, the list id and the base URL looked up once: a batch of digests
    signs two links per message (issue 15 item 1), and the local secret is a file."""

    def __init__(self, settings: Settings):
        self.key = tokens.secret_key(settings)
        self.kid = _key_id(self.key)
        self.list_id = list_id(settings)
        self.base_url = settings.site.base_url.rstrip("/")
        self._mac = hmac.new(self.key.encode("utf-8"), digestmod=hashlib.sha256)  # keyed once, copied per tag

    def token(self, purpose: str, subscriber_id: int) -> str:
        if purpose not in _LIST_PURPOSES:
            raise ValueError(purpose)
        sid = _b64(struct.pack(">Q", subscriber_id))
        mac = self._mac.copy()
        mac.update(f"{self.kid}|{subscriber_id}|{self.list_id}|{purpose}".encode())  # as _tag
        return f"{self.kid}.{sid}.{_b64(mac.digest())}"

    def unsubscribe_url(self, subscriber_id: int) -> str:
        """The List-Unsubscribe / footer link (RFC 8058 one-click POST target, LIST-3)."""
        return f"{self.base_url}/unsubscribe/{self.token('unsubscribe', subscriber_id)}"

    def preferences_url(self, subscriber_id: int) -> str:
        return f"{self.base_url}/preferences/{self.token('preferences', subscriber_id)}"


def list_token(settings: Settings, purpose: str, subscriber_id: int) -> str:
    """The UNS-1 token for `purpose` ('unsubscribe' | 'preferences'); no expiry."""
    return ListLinks(settings).token(purpose, subscriber_id)


def verify_list_token(settings: Settings, purpose: str, token: str) -> int:
    """The subscriber id the token names, or TokenError (tampered, other purpose/list,
    unknown key)."""
    bad = TokenError("this link is not valid", hint="Use the link from your most recent email, complete.")
    if not isinstance(token, str) or len(token) > 200:
        raise bad
    parts = token.split(".")
    if len(parts) != 3:
        raise bad
    kid, sid, tag = parts
    try:
        raw_id = _unb64(sid)
        given = _unb64(tag)
    except (ValueError, TypeError):
        raise bad from None
    if len(raw_id) != 8 or len(given) != 32 or _b64(raw_id) != sid or _b64(given) != tag:
        raise bad
    subscriber_id: int = struct.unpack(">Q", raw_id)[0]
    for key in _keys(settings):
        if hmac.compare_digest(_key_id(key), kid):
            expected = _tag(key, kid, subscriber_id, list_id(settings), purpose)
            if hmac.compare_digest(expected, given):
                return subscriber_id
            raise bad
    raise bad


def unsubscribe_url(settings: Settings, subscriber_id: int) -> str:
    """The List-Unsubscribe / footer link (RFC 8058 one-click POST target, LIST-3)."""
    return ListLinks(settings).unsubscribe_url(subscriber_id)


def preferences_url(settings: Settings, subscriber_id: int) -> str:
    return ListLinks(settings).preferences_url(subscriber_id)


def confirm_token(settings: Settings, nonce: str) -> str:
    return tokens.sign(settings, "confirm", nonce)


def confirm_url(settings: Settings, token: str) -> str:
    return f"{settings.site.base_url.rstrip('/')}/confirm/{token}"


__all__ = [
    "ListLinks",
    "list_id",
    "list_token",
    "verify_list_token",
    "unsubscribe_url",
    "preferences_url",
    "confirm_token",
    "confirm_url",
]
