"""Time in one place: always timezone-aware UTC, and a clock tests can freeze."""

from __future__ import annotations

import datetime as dt
import os

UTC = dt.UTC


def utcnow() -> dt.datetime:
    """Now, aware, UTC. `SYNDICATE_FROZEN_NOW` (ISO 8601) pins it for golden tests."""
    frozen = os.environ.get("SYNDICATE_FROZEN_NOW")
    if frozen:
        return parse_datetime(frozen)
    return dt.datetime.now(UTC)


def parse_datetime(value: object) -> dt.datetime:
    """A date, datetime or ISO string -> aware UTC datetime (naive means UTC)."""
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, dt.date):
        result = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        result = dt.datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a date: {value!r}")
    if result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result.astimezone(UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Datetimes read back from SQLite are naive; treat them as the UTC they were."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rfc3339(value: dt.datetime) -> str:
    """RFC 3339 with upper-case T and Z, second precision (ATOM-6, JF-3)."""
    return parse_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
