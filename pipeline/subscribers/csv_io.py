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

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.store.schema import subscribers
from pipeline.subscribers.addresses import InvalidInput, normalise_email, smtputf8_enabled
from pipeline.subscribers.consent import Client, record_event
from pipeline.subscribers.fields import clean_frequency, clean_name, clean_timezone, clean_topics
from pipeline.subscribers.state import (
    get,
    get_by_id,
    is_suppressed_address,
    issue_confirmation,
    list_subscribers,
    mark_confirmed,
    update_preferences,
)
from pipeline.timeutil import utcnow

IMPORT_COLUMNS = ("email", "name", "frequency", "topics", "timezone")
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
    semicolon separated). Bad rows are reported by line and skipped; unsubscribed and
    suppressed addresses are kept as they are. `confirmed` marks new and unconfirmed
    rows confirmed with the stated `source` (required then); otherwise new rows get a
    confirmation email."""
    if confirmed and not source.strip():
        raise InvalidInput(
            "source",
            "--confirmed needs --source NAME: where these people gave their consent",
            hint="e.g. --source 'paper sign-up sheet, 2026 fair'",
        )
    now = now or utcnow()
    report = ImportReport()
    reader = csv.DictReader(stream)
    if reader.fieldnames is None:
        return report
    fields = [f.strip().lower() for f in reader.fieldnames]
    if "email" not in fields:
        raise InvalidInput(
            "email",
            f"{file_name or 'the CSV file'}: no 'email' column in the header line",
            hint=f"The first line names the columns: {','.join(IMPORT_COLUMNS)}.",
        )
    reader.fieldnames = fields
    # Any well-formed topic goes: an operator may list topics no article has used yet.
    known: list[str] = []
    tag = f"import:{source.strip()}" if source.strip() else "import"
    client = Client(source=tag, wording_version=f"import:{source.strip()}"[:80] if source.strip() else "import")
    line_end = reader.line_num
    seen: set[str] = set()
    for record in reader:
        line = line_end + 1
        line_end = reader.line_num
        if not any((v or "").strip() for k, v in record.items() if k is not None):
            continue
        report.rows += 1
        try:
            if None in record:
                raise InvalidInput("row", "more values than columns")
            address = normalise_email(record.get("email"), smtputf8=smtputf8_enabled(settings))
            prefs = {
                "name": clean_name(record.get("name")),
                "frequency": clean_frequency((record.get("frequency") or "").strip().lower(), settings),
                "topics": clean_topics(record.get("topics") or "", known),
                "timezone": clean_timezone((record.get("timezone") or "").strip()),
            }
        except InvalidInput as exc:
            report.bad.append((line, exc.message))
            continue
        if address in seen:
            report.bad.append((line, f"{address} appears more than once; this row was skipped"))
            continue
        seen.add(address)
        existing = get(conn, address)
        suppression = is_suppressed_address(conn, address)
        if existing and existing["state"] in ("unsubscribed", "suppressed"):
            report.kept.append((line, address, existing["state"]))
            continue
        if suppression:
            report.kept.append((line, address, f"suppressed ({suppression})"))
            continue
        detail = {"file": file_name, "line": line}
        if existing is None:
            sid = conn.execute(
                insert(subscribers).values(
                    email=address, state="unconfirmed", source=tag[:200], created_at=now, updated_at=now, **prefs
                )
            ).inserted_primary_key[0]
            record_event(
                conn,
                settings,
                sid,
                "imported",
                client=client,
                now=now,
                wording=client.wording_version,
                detail={**detail, "preferences": prefs},
            )
            report.added += 1
            sub = get_by_id(conn, sid)
        else:
            # Only what the row states: a missing column or an empty cell keeps the current value.
            given = {k: v for k, v in prefs.items() if (record.get(k) or "").strip()}
            changes = update_preferences(
                conn, settings, existing["id"], client=client, now=now, known_topics=known, **given
            )
            sub = get_by_id(conn, existing["id"])
            if changes:
                report.updated += 1
            elif not (confirmed and sub["state"] == "unconfirmed"):
                report.unchanged += 1
        if sub["state"] == "unconfirmed":
            if confirmed:
                mark_confirmed(conn, settings, sub["id"], source=tag, now=now, detail=detail)
                report.confirmed += 1
            elif existing is None:
                issue_confirmation(conn, settings, sub, client, now)
                report.confirmations_queued += 1
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
