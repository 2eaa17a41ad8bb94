"""Signed tokens, one salt per purpose, HMAC-SHA256 (itsdangerous' default is SHA-1).

A token made for one purpose (`confirm`, `unsubscribe`, `preferences`, `verp`, ...)
does not verify for another, and one made for a subscriber names that subscriber
only. The key comes from the environment (SYNDICATE_SECRET_KEY); `syndicate init`
writes a local one to var/secret_key for the demo and says so.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from pipeline.config import Settings
from pipeline.errors import ConfigError, TokenError
from pipeline.files import write_atomic

log = logging.getLogger(__name__)
SECRET_FILE = "secret_key"
_warned = False


def local_secret_path(settings: Settings) -> Path:
    return settings.path("paths.var") / SECRET_FILE


def create_local_secret(settings: Settings) -> bool:
    """Write var/secret_key if it does not exist; True when a new one was written."""
    path = local_secret_path(settings)
    if path.exists():
        return False
    write_atomic(path, secrets.token_urlsafe(48) + "\n", mode=0o600)  # never readable by others, not even briefly
    return True


def secret_key(settings: Settings) -> str:
    global _warned
    key: str = settings.security.secret_key
    if key:
        return key
    path = local_secret_path(settings)
    if path.exists():
        if not _warned:
            log.warning("using the local demo secret in %s; set SYNDICATE_SECRET_KEY in production", path)
            _warned = True
        return path.read_text(encoding="utf-8").strip()
    raise ConfigError(
        "no secret key to sign tokens with",
        hint="Set SYNDICATE_SECRET_KEY (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`), "
        "or run `syndicate init` for a local demo secret.",
    )


def secret_source(settings: Settings) -> str | None:
    """Where the signing key comes from, named for people (serve's log, /healthz):
    'environment', 'demo secret file' (var/secret_key, written by `syndicate init` for the
    demo; production sets SYNDICATE_SECRET_KEY), or None when there is none."""
    if settings.security.secret_key:
        return "environment"
    if local_secret_path(settings).exists():
        return "demo secret file"
    return None


def _serializer(settings: Settings, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(
        secret_key(settings), salt=f"syndicate.{purpose}", signer_kwargs={"digest_method": hashlib.sha256}
    )


def _timed_serializer(settings: Settings, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret_key(settings), salt=f"syndicate.{purpose}", signer_kwargs={"digest_method": hashlib.sha256}
    )


def sign(settings: Settings, purpose: str, value: Any, *, timed: bool = False) -> str:
    serializer = _timed_serializer(settings, purpose) if timed else _serializer(settings, purpose)
    token: str = serializer.dumps(value)
    return token


def verify(settings: Settings, purpose: str, token: str, *, max_age: int | None = None) -> Any:
    """The signed value, or TokenError (tampered, wrong purpose, or older than max_age)."""
    try:
        if max_age is not None:
            return _timed_serializer(settings, purpose).loads(token, max_age=max_age)
        return _serializer(settings, purpose).loads(token)
    except SignatureExpired:
        raise TokenError("this link has expired", hint="Ask for a new one.") from None
    except BadSignature:
        raise TokenError("this link is not valid", hint="Check that the whole link was copied.") from None


def random_token() -> str:
    """A 256-bit random token for single-use links (store only its sha256)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
