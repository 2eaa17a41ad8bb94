"""Email addresses: what we accept at sign-up, and how an address is written into a header.

One rule for every email kind (confirmation, notice, digest, instant) and for every
way in (web form, JSON, `subscribers add`, CSV import), decided at sign-up time:

- the domain is stored and sent in its IDNA ASCII form (``bücher.example`` becomes
  ``xn--bcher-kva.example``): every relay and every bounce report can name it, and the
  suppression list matches it whichever way a report spells it;
- a local part with non-ASCII characters (``jörg@...``) needs SMTPUTF8 (RFC 6531) on
  the relay. It is accepted only when ``email.smtputf8`` declares that the relay offers
  it; otherwise the sign-up is refused with a message that says why, instead of an
  address that can never be mailed;
- an address is never written into a header as RFC 2047 encoded-words (forbidden
  inside an addr-spec): a display name may be encoded, the address never is; an
  SMTPUTF8 address is written as raw UTF-8 (RFC 6532).
"""

from __future__ import annotations

from email.utils import formataddr

from pipeline.config import Settings
from pipeline.errors import SyndicateError

MAX_LENGTH = 320


class InvalidInput(SyndicateError):
    """A field of a sign-up, a preference change or an import row is not acceptable."""

    def __init__(self, field: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.field = field


class UndeliverableAddress(SyndicateError):
    """An address that cannot be written into a message for this relay (a non-ASCII
    local part without SMTPUTF8, a domain IDNA cannot encode). A permanent failure."""


def smtputf8_enabled(settings: Settings) -> bool:
    """Whether the relay takes SMTPUTF8 addresses (`email.smtputf8`, declared by the operator)."""
    return bool(settings.email.smtputf8)


def needs_smtputf8(address: str) -> bool:
    """True when the address cannot travel without SMTPUTF8 (its local part is not ASCII)."""
    local, _, _domain = address.rpartition("@")
    return not local.isascii()


def normalise_email(raw: object, *, smtputf8: bool = False) -> str:
    """A syntactically valid address, lower-cased, its domain in IDNA ASCII form; no DNS
    lookups. A non-ASCII local part is refused unless `smtputf8` (see the module doc)."""
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("email", "an email address is required")
    text = raw.strip()
    if len(text) > MAX_LENGTH:
        raise InvalidInput("email", "that email address is too long")
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidInput("email", f"{text[:80]!r} is not a valid email address: {exc}") from None
    if result.ascii_email:
        return result.ascii_email.lower()
    if not smtputf8:
        raise InvalidInput(
            "email",
            f"{text[:80]!r} has non-ASCII characters before the @, which our mail server cannot "
            "deliver to; please use another address",
            hint="Operators: set email.smtputf8 = true only if your relay offers SMTPUTF8 (RFC 6531).",
        )
    return f"{result.local_part}@{result.ascii_domain}".lower()


def ascii_domain(domain: str) -> str:
    """The IDNA (UTS 46) ASCII form of a domain; UndeliverableAddress when it has none."""
    if domain.isascii():
        return domain.lower()
    import idna

    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise UndeliverableAddress(
            f"the domain {domain!r} cannot be encoded for mail: {exc}",
            hint="The subscriber's address was stored before it was checked; remove it.",
        ) from None


def envelope_address(address: str, *, smtputf8: bool) -> str:
    """The address as it goes on the envelope and into an address header: domain in
    ASCII; a non-ASCII local part only with `smtputf8`, else UndeliverableAddress."""
    local, at, domain = address.rpartition("@")
    if not at:
        raise UndeliverableAddress(f"{address!r} is not an email address")
    if not local.isascii() and not smtputf8:
        raise UndeliverableAddress(
            f"{address!r} needs SMTPUTF8 (a non-ASCII local part) and email.smtputf8 is off",
            hint="Set email.smtputf8 = true if the relay offers SMTPUTF8 (RFC 6531).",
        )
    return f"{local}@{ascii_domain(domain)}"


def format_to(name: str, address: str, *, smtputf8: bool) -> str:
    """A `To:` value: `address`, or `name <address>` with the name quoted or RFC 2047
    encoded as needed and the address never encoded (RFC 2047 section 5)."""
    addr = envelope_address(address, smtputf8=smtputf8)
    if not name:
        return addr
    if addr.isascii():
        return formataddr((name, addr), charset="utf-8")
    # formataddr refuses a non-ASCII address: let it write the display name for a
    # placeholder, then put the real (SMTPUTF8) address in.
    placeholder = "x@x.invalid"
    display = formataddr((name, placeholder), charset="utf-8")
    return display[: -len(placeholder) - 2] + f"<{addr}>"


__all__ = [
    "InvalidInput",
    "UndeliverableAddress",
    "smtputf8_enabled",
    "needs_smtputf8",
    "normalise_email",
    "ascii_domain",
    "envelope_address",
    "format_to",
]
