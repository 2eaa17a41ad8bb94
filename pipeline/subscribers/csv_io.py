"""Subscribers in and out as CSV: `syndicate subscribers import` and `export`.

Import applies the same address rule as a sign-up (pipeline.subscribers.addresses),
reports bad rows by line and skips them, and never touches an unsubscribed or
suppressed address.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
from typing import IO

from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.subscribers.columns import OWN
from pipeline.subscribers.state import list_subscribers

IMPORT_COLUMNS = OWN  # the columns of our own import format (pipeline.subscribers.columns)
EXPORT_COLUMNS = (
    "email",
    "name",
    "state",
    "frequency",
    "topics",
    "timezone",
    "source",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
)


@dataclasses.dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    updated: int = 0
    confirmed: int = 0
    confirmations_queued: int = 0
    unchanged: int = 0
    kept: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)  # (line, email, state)
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line, message)

    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "added": self.added,
            "updated": self.updated,
            "confirmed": self.confirmed,
            "confirmations_queued": self.confirmations_queued,
            "unchanged": self.unchanged,
            "kept_unsubscribed_or_suppressed": len(self.kept),
            "bad": len(self.bad),
        }


def import_csv(
    conn: Connection,
    settings: Settings,
    stream: IO[str],
    *,
    confirmed: bool = False,
    source: str = "",
    file_name: str = "",
    now: dt.datetime | None = None,
) -> ImportReport:
    """Upsert subscribers from CSV (columns email,name,frequency,topics,timezone; topics
    semicolon separated), in the caller's transaction. The engine is
    pipeline.subscribers.imports (batched, IMP-1..5); this is its one-call form for
    small files and tests. Bad rows are reported by line and skipped; unsubscribed and
    suppressed addresses are kept as they are. `confirmed` marks new and unconfirmed
    rows confirmed with the stated `source` (required then); otherwise new rows get a
    confirmation email."""
    from pipeline.subscribers.imports import import_csv_stream

    run = import_csv_stream(conn, settings, stream, confirmed=confirmed, source=source, file_name=file_name, now=now)
    report = ImportReport(
        rows=run.total,
        added=run.created,
        updated=run.updated,
        confirmed=run.confirmed,
        confirmations_queued=run.confirmations_queued,
        unchanged=run.unchanged,
    )
    for note in run.notes:
        if note.kind == "bad":
            report.bad.append((note.line, note.message))
        else:
            report.kept.append((note.line, note.email, note.state))
    return report


def _iso(value) -> str:
    return value.isoformat() if value else ""


def export_csv(conn: Connection, stream: IO[str], *, state: str | None = None) -> int:
    """Write every subscriber (or those in `state`) with state and preferences; returns rows."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for sub in list_subscribers(conn, state=state):
        writer.writerow(
            [
                sub["email"],
                sub["name"],
                sub["state"],
                sub["frequency"],
                ";".join(sub["topics"] or []),
                sub["timezone"],
                sub["source"],
                _iso(sub["created_at"]),
                _iso(sub["confirmed_at"]),
                _iso(sub["unsubscribed_at"]),
            ]
        )
        n += 1
    return n


__all__ = ["IMPORT_COLUMNS", "EXPORT_COLUMNS", "ImportReport", "import_csv", "export_csv"]
