"""One exception base for every domain error.

Only `pipeline.cli` (exit codes) and `pipeline.web.app` (HTTP statuses) turn these into
something a person sees; the core raises them with a message and a hint that says
what to do next.
"""

from __future__ import annotations


class SyndicateError(Exception):
    """A problem an operator can act on: `message` says what, `hint` says what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(SyndicateError):
    """A setting is unknown, missing or has a bad value."""


class ContentError(SyndicateError):
    """An article or author file cannot be read; `path` and `field` name the culprit."""

    def __init__(self, path: object, message: str, hint: str | None = None, field: str | None = None):
        self.path = str(path)
        self.field = field
        self.errors: list[ContentError] = []  # strict mode: every bad file, the first one included
        where = f"{self.path}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {message}", hint)


class EditorialError(SyndicateError):
    """An editorial action is not allowed (flagged revision, unknown slug, ...)."""


class NotFound(SyndicateError):
    """A thing named by the operator does not exist."""


class DeliveryError(SyndicateError):
    """A send failed; carries how the failure is classified (see pipeline.delivery)."""


class TokenError(SyndicateError):
    """A signed token is malformed, tampered with, expired, or for another purpose."""
