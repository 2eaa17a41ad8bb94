"""DKIM signing with dkimpy (DKIM-1..4, LIST-5).

Signing is the last thing done to a message, after every header is final, and the
signed bytes are exactly the bytes handed to the server. `rsa-sha256`,
`c=relaxed/relaxed`, and an explicit header list (dkimpy's default omits
List-Unsubscribe-Post). Every listed header is signed even when absent, so nobody
can add it later without breaking the signature.
"""

from __future__ import annotations

import logging

import dkim

from pipeline.config import Settings
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SIGNED_HEADERS = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
                  b"List-Id", b"List-Unsubscribe", b"List-Unsubscribe-Post"]


class DkimSigner:
    def __init__(self, selector: str, domain: str, private_key: bytes):
        if not selector or not domain:
            raise ConfigError("DKIM needs both email.dkim_selector and email.dkim_domain",
                              hint="Set both, or leave email.dkim_selector empty to send unsigned.")
        if b"PRIVATE KEY" not in private_key:
            raise ConfigError("the DKIM private key is not a PEM private key",
                              hint="Set SYNDICATE_EMAIL__DKIM_PRIVATE_KEY to the PEM text, "
                                   "or delivery.dkim_key_file to a PEM file.")
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")
        self.key = private_key

    def sign(self, data: bytes) -> bytes:
        signature = dkim.sign(data, self.selector, self.domain, self.key,
                              canonicalize=(b"relaxed", b"relaxed"), include_headers=SIGNED_HEADERS,
                              linesep=b"\r\n")
        return signature + data


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
            raise ConfigError(f"cannot read the DKIM key file {path}: {exc}",
                              hint="Fix delivery.dkim_key_file, or unset email.dkim_selector.") from None
    if not key:
        raise ConfigError("email.dkim_selector is set but there is no DKIM private key",
                          hint="Set SYNDICATE_EMAIL__DKIM_PRIVATE_KEY or delivery.dkim_key_file.")
    domain = e.dkim_domain
    if not domain:
        from pipeline.delivery.email.verp import bounce_domain
        domain = bounce_domain(settings)
    return DkimSigner(e.dkim_selector, domain, key)
