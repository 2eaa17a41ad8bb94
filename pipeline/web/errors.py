"""Errors of the web layer that both the public service (pipeline.web.app) and the desk
(pipeline.web.desk) raise: here, so that the desk does not import the app that mounts
it."""

from __future__ import annotations

from pipeline.errors import SyndicateError


class BadRequest(SyndicateError):
    """The request itself is unusable (not a form, too large, a file where text belongs)."""

    def __init__(self, message: str, status: int = 400, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status
