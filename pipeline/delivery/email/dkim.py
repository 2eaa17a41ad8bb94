"""DKIM signing with dkimpy (DKIM-1..4, LIST-5).

Signing is the last thing done to a message, after every header is final, and the
signed bytes are exactly the bytes handed to the server. `rsa-sha256` with a key of
at least 2048 bits (shorter keys are refused when the signer is made), `c=relaxed/relaxed`,
and an explicit header list (dkimpy's default omits List-Unsubscribe-Post; Reply-To is
in it, so nobody can swap the reply address). Every listed header is signed even when
absent, so nobody can add it later without breaking the signature.
"""

from __future__ import annotations

import logging

from pipeline.config import Settings
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SIGNED_HEADERS = [
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"Reply-To",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
]
# RFC 8301 3.2 allows 1024 bits; Gmail, Yahoo and M3AAWG ask for 2048, and 1024-bit RSA
# is within reach of a determined forger (issue 16 item 5).
MIN_RSA_BITS = 2048


class DkimSigner:
    def __init__(self, selector: str, domain: str, private_key: bytes):
        if not selector or not domain:
            raise ConfigError(
                "DKIM needs both email.dkim_selector and email.dkim_domain",
                hint="Set both, or leave email.dkim_selector empty to send unsigned.",
            )
        if b"PRIVATE KEY" not in private_key:
            raise ConfigError(
                "the DKIM private key is not a PEM private key",
                hint="Set SYNDICATE_EMAIL__DKIM_PRIVATE_KEY to the PEM text, or delivery.dkim_key_file to a PEM file.",
            )
        bits = rsa_key_bits(private_key)
        if bits < MIN_RSA_BITS:
            raise ConfigError(
                f"the DKIM private key has {bits} bits; at least {MIN_RSA_BITS} are required "
                "(Gmail and Yahoo treat shorter keys as weak, RFC 8301)",
                hint=f"Make a new key: openssl genrsa -out dkim.pem {MIN_RSA_BITS}; publish its "
                f"public half under a new selector, then point the settings at both.",
            )
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")
        self.key = private_key
        # Imported by a signer only: dkimpy brings dnspython (60 ms), which every
        # `deliver` and `serve` without DKIM used to load for nothing.
        import dkim

        self._sign = dkim.sign

    def sign(self, data: bytes) -> bytes:
        signature = self._sign(
            data,
            self.selector,
            self.domain,
            self.key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=SIGNED_HEADERS,
            linesep=b"\r\n",
        )
        return signature + data


def rsa_key_bits(private_key: bytes) -> int:
    """The modulus size of a PEM RSA private key (PKCS#1 or PKCS#8)."""
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        return int(parse_pem_private_key(private_key)["modulus"]).bit_length()
    except (UnparsableKeyError, KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"the DKIM private key cannot be read as an RSA key: {exc}".splitlines()[0],
            hint="Use a PEM RSA key (openssl genrsa -out dkim.pem 2048).",
        ) from None


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """A signer when email.dkim_selector and a key are configured, else None."""
    e = settings.email
    if not e.dkim_selector:
        return None
    key = e.dkim_private_key.encode("utf-8") if e.dkim_private_key else b""
    if not key and settings.delivery.dkim_key_file:
        path = settings.path("delivery.dkim_key_file")
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the DKIM key file {path}: {exc}",
                hint="Fix delivery.dkim_key_file, or unset email.dkim_selector.",
            ) from None
    if not key:
        raise ConfigError(
            "email.dkim_selector is set but there is no DKIM private key",
            hint="Set SYNDICATE_EMAIL__DKIM_PRIVATE_KEY or delivery.dkim_key_file.",
        )
    domain = e.dkim_domain
    if not domain:
        from pipeline.delivery.email.verp import bounce_domain

        domain = bounce_domain(settings)
    return DkimSigner(e.dkim_selector, domain, key)
