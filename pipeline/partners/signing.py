"""Standard Webhooks signatures (SW-1, SW-2, SW-3): sign on our side, verify in tests.

The signed content is exactly ``f"{id}.{timestamp}.".encode() + body`` where body is
the bytes sent; the key is the base64-decoded secret without its ``whsec_`` prefix.
A partner's secret environment variable may hold several secrets separated by spaces
(key rotation): every one signs, and the ``webhook-signature`` header lists them all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from pipeline.errors import ConfigError

PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60  # the reference library's tolerance


def secret_key(secret: str) -> bytes:
    """`whsec_<base64>` (or bare base64) -> the HMAC key bytes."""
    text = secret.strip()
    if text.startswith(PREFIX):
        text = text[len(PREFIX) :]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "a webhook secret is not valid base64",
            hint="Secrets look like whsec_<base64 of 24-64 random bytes>; "
            "`python -c \"import base64,os;print('whsec_'+base64.b64encode(os.urandom(32)).decode())\"` makes one.",
        ) from None


def split_secrets(value: str) -> list[str]:
    """The secrets held in one environment variable: space (or comma) separated, newest first."""
    return [s for s in value.replace(",", " ").split() if s]


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of exactly these bytes."""
    if "." in msg_id or "." in str(timestamp):
        raise ValueError("webhook id and timestamp must not contain '.'")
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space separated (SW-1)."""
    if not secrets:
        raise ConfigError("no webhook secret to sign with", hint="Set the partner's secret_env variable.")
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def headers(secrets: list[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(secrets, msg_id, ts, body),
    }


class VerificationError(Exception):
    pass


def verify(
    secrets: list[str], header_map, body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE_SECONDS
) -> str:
    """A receiver's check, as the spec's reference libraries do it: the timestamp is
    within `tolerance` seconds of now (either way) and one `v1` signature matches one
    of our secrets, compared in constant time. Returns the webhook-id; raises
    VerificationError saying why not."""
    get = header_map.get
    msg_id = get("webhook-id") or ""
    ts_text = get("webhook-timestamp") or ""
    sig_header = get("webhook-signature") or ""
    if not msg_id or not ts_text or not sig_header:
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(ts_text)
    except ValueError:
        raise VerificationError(f"bad webhook-timestamp {ts_text!r}") from None
    now = time.time() if now is None else now
    if ts < now - tolerance:
        raise VerificationError("message timestamp too old")
    if ts > now + tolerance:
        raise VerificationError("message timestamp too new")
    expected = {sign(s, msg_id, ts, body).split(",", 1)[1] for s in secrets}
    for candidate in sig_header.split(" "):
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        if any(hmac.compare_digest(value.encode(), e.encode()) for e in expected):
            return msg_id
    raise VerificationError("no matching signature")
