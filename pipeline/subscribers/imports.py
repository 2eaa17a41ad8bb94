"""Bulk subscriber import: the one import engine (the CLI now, the API later).

An import is a row in ``subscriber_imports`` (``create_import``), run by ``run_import``:

- the CSV is streamed (IMP-1): rows are read, checked and written ``batch_rows`` at a
  time, so memory stays flat in the file's size; only a 64-bit hash per address is kept
  for the whole file, to report duplicates;
- every row is checked in Python with the sign-up rules (``addresses``, ``fields``);
  a bad row is reported with its line number, the field and why, and skipped; the rest
  goes on (IMP-2);
- each batch costs a fixed number of SQL statements, whatever its size (IMP-3): one
  SELECT for the batch's known addresses, one for its suppressions, then one INSERT
  per table (pipeline.store.bulk) for subscribers, consent events, confirmation tokens
  and their outbox rows, ``executemany`` UPDATEs for known addresses, the row notes
  and the import's counts;
- importing the same file twice changes nothing; unsubscribed and suppressed addresses
  stay so (IMP-4);
- whoever the file itself says is not subscribed (the exports of Syndicate, listmonk,
  Ghost and Mailchimp: ``pipeline.subscribers.columns``) is left out and reported (IMP-7);
- the consent log gets exactly what a one-by-one import wrote (IMP-5): ``imported``
  (source ``import:SOURCE``, wording and privacy versions), then ``confirmed`` ("stated
  by operator") with ``confirmed``, or a confirmation email through the outbox
  (``confirm_sent``) without; a known address gets ``preferences`` for what changed.

Given an Engine, every batch is its own transaction (a crash loses at most the batch
in flight, and running the file again completes it: IMP-4); given a Connection, all
of it runs in the caller's transaction. A dry run reads what it must, counts and notes
what it would do, and writes only the import's own row and notes.
"""

from __future__ import annotations

import array
import bisect
import csv
import dataclasses
import datetime as dt
import heapq
import io
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import bindparam, cast, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import JSON as JSON_PG
from sqlalchemy.engine import Connection, Engine

from pipeline import tokens
from pipeline.config import Settings
from pipeline.errors import NotFound
from pipeline.states import ImportStatus
from pipeline.store.bulk import insert_rows
from pipeline.store.schema import (
    confirm_tokens,
    subscriber_events,
    subscriber_import_errors,
    subscriber_imports,
    subscribers,
    suppressions,
)
from pipeline.subscribers.addresses import InvalidInput, normalise_email, smtputf8_enabled
from pipeline.subscribers.columns import OWN, Verdict, header_delimiter, read_header
from pipeline.subscribers.fields import clean_frequency, clean_name, clean_timezone, clean_topics
from pipeline.subscribers.links import confirm_token
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

IMPORT_COLUMNS = OWN  # the columns of our own format
PREFERENCES = ("name", "frequency", "topics", "timezone")
KEEP_NOTES = 1000  # row notes kept in the returned report; all of them go to the database
MAX_BATCH_ROWS = 10_000  # one IN (...) parameter per row; SQLite allows 32,766
NOTES_DAYS = 30  # row notes name addresses: the purge stage deletes them after this

Progress = Callable[["ImportReport"], None]


@dataclasses.dataclass
class RowNote:
    """What the import said about one line: kind ``bad`` (skipped) or ``skipped`` (kept as it is)."""

    line: int
    kind: str
    field: str
    message: str
    email: str = ""  # for a skipped row: the address and its state (not stored)
    state: str = ""


@dataclasses.dataclass
class ImportReport:
    import_id: int | None = None
    dry_run: bool = False
    total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    bad: int = 0
    confirmed: int = 0
    confirmations_queued: int = 0
    notes: list[RowNote] = dataclasses.field(default_factory=list)  # the first `keep_notes`
    bytes_read: int = 0
    bytes_total: int | None = None
    consent_columns: list[str] = dataclasses.field(default_factory=list)  # read for who is not subscribed (IMP-7)
    ignored_columns: list[str] = dataclasses.field(default_factory=list)  # in the header, read by nothing

    def counts(self) -> dict[str, int]:
        return {
            "total": self.total,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "bad": self.bad,
            "confirmed": self.confirmed,
            "confirmations_queued": self.confirmations_queued,
        }


# --- the import's own row ---------------------------------------------------------------------


def _consent_source(source: str, confirmed: bool) -> str:
    """The import's source, stripped; `confirmed` needs one (where people gave consent)."""
    source = (source or "").strip()
    if confirmed and not source:
        raise InvalidInput(
            "source",
            "--confirmed needs --source NAME: where these people gave their consent",
            hint="e.g. --source 'paper sign-up sheet, 2026 fair'",
        )
    return source


def create_import(
    conn: Connection, *, filename: str, source: str, confirmed: bool, created_by: str, now: dt.datetime | None = None
) -> int:
    """A queued import; its id. `confirmed` needs a `source` (where people gave consent)."""
    source = _consent_source(source, confirmed)
    return conn.execute(
        insert(subscriber_imports)
        .values(
            filename=(filename or "")[:500],
            source=source[:200],
            confirmed=bool(confirmed),
            dry_run=False,
            created_by=(created_by or "")[:320],
            status=ImportStatus.QUEUED,
            total=0,
            created=0,
            updated=0,
            unchanged=0,
            skipped=0,
            bad=0,
            confirmed_count=0,
            confirmations_queued=0,
            created_at=now or utcnow(),
            error="",
        )
        .returning(subscriber_imports.c.id)
    ).scalar_one()


def get_import(conn: Connection, import_id: int, errors_limit: int | None = None) -> dict:
    """The import's row as a dict, with ``errors``: its row notes in line order
    (at most `errors_limit`; None: all, 0: none)."""
    row = conn.execute(select(subscriber_imports).where(subscriber_imports.c.id == import_id)).mappings().first()
    if row is None:
        raise NotFound(f"no subscriber import {import_id}", hint="The id is printed when an import starts.")
    out = dict(row)
    out["errors"] = [] if errors_limit == 0 else list(_notes(conn, import_id, errors_limit))
    return out


def _notes(conn: Connection, import_id: int, limit: int | None = None) -> Iterator[dict]:
    q = (
        select(
            subscriber_import_errors.c.line,
            subscriber_import_errors.c.kind,
            subscriber_import_errors.c.field,
            subscriber_import_errors.c.message,
        )
        .where(subscriber_import_errors.c.import_id == import_id)
        .order_by(subscriber_import_errors.c.line, subscriber_import_errors.c.id)
    )
    if limit is not None:
        q = q.limit(limit)
    for r in conn.execute(q).mappings():
        yield dict(r)


def errors_csv(conn: Connection, import_id: int) -> str:
    """The import's row notes as CSV (line,kind,field,message), for the operator to fix the file."""
    get_import(conn, import_id, errors_limit=0)  # NotFound for an unknown id
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["line", "kind", "field", "message"])
    for n in _notes(conn, import_id):
        writer.writerow([n["line"], n["kind"], n["field"], n["message"]])
    return out.getvalue()


def purge_import_notes(conn: Connection, *, dry_run: bool = False, now: dt.datetime | None = None) -> int:
    """Delete the row notes (they name addresses) of imports created more than
    NOTES_DAYS ago; the import rows and their counts stay (GDPR-2). The `purge` stage
    runs it. Returns how many notes were (or, dry run, would be) deleted."""
    cutoff = (now or utcnow()) - dt.timedelta(days=NOTES_DAYS)
    old = select(subscriber_imports.c.id).where(subscriber_imports.c.created_at < cutoff)
    which = subscriber_import_errors.c.import_id.in_(old)
    count = conn.execute(select(func.count()).select_from(subscriber_import_errors).where(which)).scalar_one()
    if count and not dry_run:
        conn.execute(delete(subscriber_import_errors).where(which))
    return int(count)


# --- reading the file ---------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read (for the progress bar)."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


# A plain address (ASCII dot-atom local part, LDH labels, an alphabetic top-level
# label, no IDNA "xn--" label) that email-validator accepts as it is, lower-cased.
# Anything else goes to email-validator itself (IMP-2); tests/test_subscriber_import.py
# checks the two agree.
_PLAIN_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_PLAIN_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_RE = re.compile(rf"^({_PLAIN_LOCAL})@((?:{_PLAIN_LABEL}\.)+[a-z]{{2,63}})$")
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test", "home.arpa")


def plain_address(text: str) -> str | None:
    """`text` lower-cased when it is a plain address email-validator takes unchanged, else None."""
    address = text.lower()
    m = _PLAIN_RE.match(address)
    if m is None or len(address) > 254 or len(m.group(1)) > 64:
        return None
    domain = m.group(2)
    if len(domain) > 253 or "xn--" in domain or "--" in domain:
        return None
    top = domain.rsplit(".", 1)[-1]
    if top in _SPECIAL_USE or domain.endswith(".home.arpa"):
        return None
    return address


def check_email(raw: str | None, smtputf8: bool) -> str:
    text = (raw or "").strip()
    return plain_address(text) or normalise_email(raw, smtputf8=smtputf8)


def _address_key(address: str) -> int:
    """64 bits per address, for duplicates inside one file (IMP-1). Python's own string
    hash: fast, and stable within the one process an import runs in."""
    return hash(address)


class _SeenKeys:
    """The address keys of one file, in about 8 bytes each: the newest in a set, the
    rest in one sorted array of 64-bit integers (a set costs ~100 bytes per key: 1,000,000
    rows held ~95 MB). Merged when the set fills, so a lookup is one set probe and one
    binary search, and peak memory grows by 8 bytes per row, not 100 (IMP-6)."""

    SPILL = 1 << 16

    def __init__(self) -> None:
        self.recent: set[int] = set()
        self.sorted = array.array("q")

    def __len__(self) -> int:
        return len(self.recent) + len(self.sorted)

    def __contains__(self, key: int) -> bool:
        if key in self.recent:
            return True
        i = bisect.bisect_left(self.sorted, key)
        return i < len(self.sorted) and self.sorted[i] == key

    def add(self, key: int) -> None:
        self.recent.add(key)
        if len(self.recent) >= self.SPILL:
            self.sorted = array.array("q", heapq.merge(self.sorted, sorted(self.recent)))
            self.recent = set()


@dataclasses.dataclass
class _Row:
    line: int
    email: str
    prefs: dict
    given: tuple[str, ...]  # the preference columns the row states (non-empty cells)


class _Parser:
    """CSV records -> checked rows, bad-row notes and duplicate notes."""

    def __init__(self, settings: Settings, text: IO[str], filename: str, confirmed: bool = False):
        self.settings = settings
        self.confirmed = confirmed
        self.smtputf8 = smtputf8_enabled(settings)
        # A spreadsheet saves "CSV" with semicolons in many locales, or tabs: the header
        # line says which (its first physical line; the file is still streamed).
        first = text.readline()
        lines = itertools.chain([first], text) if first else text
        self.reader = csv.reader(lines, delimiter=header_delimiter(first))
        self.seen = _SeenKeys()
        self.topics_seen: dict[str, tuple[str, ...]] = {}
        try:
            header = next(self.reader)
        except StopIteration:
            header = None
        self.fields = [f.strip().lower() for f in header] if header else []
        self.columns = read_header(header or [])
        if header is not None and "email" not in self.columns.index:
            raise InvalidInput(
                "email",
                f"{filename or 'the CSV file'}: no 'email' column in the header line",
                hint=f"The first line names the columns: {','.join(IMPORT_COLUMNS)} "
                "(exports of Syndicate, listmonk, Ghost and Mailchimp are read as they are).",
            )
        self.index = self.columns.index
        self.line_end = self.reader.line_num

    def _topics(self, raw: str) -> list[str]:
        """clean_topics, remembered per distinct cell (a file has few distinct topic lists)."""
        done = self.topics_seen.get(raw)
        if done is None:
            done = tuple(clean_topics(raw, ()))  # InvalidInput is not remembered: raised each time
            if len(self.topics_seen) < 4096:
                self.topics_seen[raw] = done
        return list(done)

    def __iter__(self) -> Iterator[_Row | RowNote]:
        if not self.fields:
            return
        width = len(self.fields)
        index = self.index
        columns, confirmed = self.columns, self.confirmed
        settings = self.settings
        for record in self.reader:
            line = self.line_end + 1
            self.line_end = self.reader.line_num
            if not any(v.strip() for v in record):
                continue
            cells = {name: record[i] if i < len(record) else "" for name, i in index.items()}
            if columns.name_parts:
                cells["name"] = columns.name(record)
            try:
                if len(record) > width:
                    raise InvalidInput("row", "more values than columns")
                address = check_email(cells.get("email"), self.smtputf8)
                said = columns.verdict(record, confirmed) if columns.rules else None
                if said is not None and said[0] == Verdict.BAD:
                    raise InvalidInput(said[1], said[2])
                if said is None:
                    prefs = {
                        "name": clean_name(cells.get("name", "")),
                        "frequency": clean_frequency(cells.get("frequency", "").strip().lower(), settings),
                        # Any well-formed topic goes: an operator may list topics no article has used yet.
                        "topics": self._topics(cells.get("topics", "")),
                        "timezone": clean_timezone(cells.get("timezone", "").strip()),
                    }
            except InvalidInput as exc:
                yield RowNote(line, "bad", exc.field, exc.message)
                continue
            key = _address_key(address)
            if key in self.seen:
                yield RowNote(line, "bad", "email", f"{address} appears more than once; this row was skipped")
                continue
            self.seen.add(key)
            if said is not None:  # IMP-7: the file says this person is not subscribed (or never confirmed)
                yield RowNote(line, "skipped", said[1], f"{address}: {said[2]}", address, "left out")
                continue
            given = tuple(k for k in PREFERENCES if cells.get(k, "").strip())
            yield _Row(line, address, prefs, given)


# --- writing a batch ------------------------------------------------------------------------------


class _Writer:
    """One batch's reads and writes: a fixed number of statements per batch (IMP-3)."""

    def __init__(self, settings: Settings, report: ImportReport, *, source: str, confirmed: bool, filename: str, now):
        self.settings = settings
        self.report = report
        self.confirmed = confirmed
        self.filename = filename
        self.now = now
        self.tag = f"import:{source}" if source else "import"
        self.wording = (f"import:{source}" if source else "import")[:80]
        self.operator_wording = f"stated by operator: {self.tag}"[:80]
        self.privacy = settings.subscribers.privacy_version
        self.keep_notes = KEEP_NOTES

    def note(self, notes: list[dict], n: RowNote) -> None:
        report = self.report
        if n.kind == "bad":
            report.bad += 1
        else:
            report.skipped += 1
        if self.keep_notes is None or len(report.notes) < self.keep_notes:
            report.notes.append(n)
        notes.append({"line": n.line, "kind": n.kind, "field": n.field[:40], "message": n.message})

    def _event(self, sid: int, kind: str, *, wording: str | None = None, token_hash=None, detail: dict) -> dict:
        return {
            "subscriber_id": sid,
            "kind": kind,
            "at": self.now,
            "source": self.tag[:300],
            "wording_version": (wording or "")[:80],
            "privacy_version": self.privacy if wording is not None else "",
            "token_hash": token_hash,
            "ip": None,
            "user_agent": None,
            "detail": detail,
        }

    def flush(self, conn: Connection, rows: list[_Row], notes: list[dict], import_id: int | None, dry_run: bool):
        report, now = self.report, self.now
        emails = [r.email for r in rows]
        known: dict[str, dict] = {}
        blocked: dict[str, str] = {}
        if emails:
            cols = [subscribers.c[c] for c in ("id", "email", "state", *PREFERENCES)]
            known = {
                r["email"]: dict(r)
                for r in conn.execute(select(*cols).where(_among(conn, subscribers.c.email, emails))).mappings()
            }
            blocked = {
                email: reason
                for email, reason in conn.execute(
                    select(suppressions.c.email, suppressions.c.reason).where(
                        _among(conn, suppressions.c.email, emails)
                    )
                )
            }
        new: list[_Row] = []
        pref_updates: list[dict] = []
        confirm_updates: list[dict] = []
        events: list[dict] = []
        for row in rows:
            sub = known.get(row.email)
            if sub is not None and sub["state"] in ("unsubscribed", "suppressed"):
                self.note(
                    notes,
                    RowNote(
                        row.line,
                        "skipped",
                        "email",
                        f"{row.email} is {sub['state']}; kept as it is",
                        row.email,
                        sub["state"],
                    ),
                )
                continue
            if row.email in blocked:
                self.note(
                    notes,
                    RowNote(
                        row.line,
                        "skipped",
                        "email",
                        f"{row.email} is suppressed ({blocked[row.email]}); kept as it is",
                        row.email,
                        f"suppressed ({blocked[row.email]})",
                    ),
                )
                continue
            if sub is None:
                new.append(row)
                continue
            detail = {"file": self.filename, "line": row.line}
            current = {k: (list(sub[k] or []) if k == "topics" else sub[k]) for k in PREFERENCES}
            wanted = {k: (row.prefs[k] if k in row.given else current[k]) for k in PREFERENCES}
            changes = {k: [current[k], wanted[k]] for k in PREFERENCES if current[k] != wanted[k]}
            if changes:
                pref_updates.append({"b_id": sub["id"], **{f"b_{k}": v for k, v in wanted.items()}})
                events.append(self._event(sub["id"], "preferences", detail={"changes": changes}))
                report.updated += 1
            elif not (self.confirmed and sub["state"] == "unconfirmed"):
                report.unchanged += 1
            if self.confirmed and sub["state"] == "unconfirmed":
                confirm_updates.append({"b_id": sub["id"]})
                events.append(self._event(sub["id"], "confirmed", wording=self.operator_wording, detail=detail))
                report.confirmed += 1
        ids: dict[str, int] = {}
        if new and not dry_run:
            values = [
                {
                    "email": r.email,
                    "state": "confirmed" if self.confirmed else "unconfirmed",
                    "source": self.tag[:200],
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": now if self.confirmed else None,
                    "unsubscribed_at": None,
                    "last_digest_at": None,
                    **r.prefs,
                }
                for r in sorted(new, key=lambda r: r.email)  # B-tree inserts in key order
            ]
            if conn.dialect.name == "postgresql":
                inserted = insert_rows(conn, subscribers, values, conflict="email", returning=("id", "email"))
                ids = {email: sid for sid, email in inserted}
            else:
                # SQLite: the batch's transaction holds the database's one write lock
                # (BEGIN IMMEDIATE), so the addresses the first SELECT did not find are
                # the rows this INSERT adds; one SELECT gets their ids.
                insert_rows(conn, subscribers, values, conflict="email")
                ids = {
                    email: sid
                    for sid, email in conn.execute(
                        select(subscribers.c.id, subscribers.c.email).where(
                            _among(conn, subscribers.c.email, [v["email"] for v in values]),
                            subscribers.c.created_at == now,
                            subscribers.c.source == self.tag[:200],
                        )
                    )
                }
        tokens_rows: list[dict] = []
        outbox_rows: list[dict] = []
        for r in new:
            sid = ids.get(r.email, 0) if not dry_run else 0
            if not dry_run and not sid:  # a sign-up for the same address won the race
                self.note(notes, RowNote(r.line, "skipped", "email", f"{r.email} signed up meanwhile; import again"))
                continue
            report.created += 1
            detail = {"file": self.filename, "line": r.line}
            events.append(self._event(sid, "imported", wording=self.wording, detail={**detail, "preferences": r.prefs}))
            if self.confirmed:
                events.append(self._event(sid, "confirmed", wording=self.operator_wording, detail=detail))
                report.confirmed += 1
                continue
            report.confirmations_queued += 1
            if dry_run:
                continue
            nonce = tokens.random_token()
            token_h = tokens.token_hash(confirm_token(self.settings, nonce))
            expires = now + dt.timedelta(hours=self.settings.subscribers.confirm_ttl_hours)
            tokens_rows.append(
                {"subscriber_id": sid, "token_hash": token_h, "created_at": now, "expires_at": expires, "used_at": None}
            )
            outbox_rows.append(
                {
                    "channel": "email",
                    "target": r.email,
                    "kind": "confirm",
                    "key": f"confirm:{sid}:{token_h[:32]}",
                    "subscriber_id": sid,
                    "payload": {"subscriber_id": sid, "nonce": nonce, "expires_at": expires.isoformat()},
                }
            )
            events.append(
                self._event(sid, "confirm_sent", token_hash=token_h, detail={"expires_at": expires.isoformat()})
            )
        if not dry_run:
            if pref_updates:
                conn.execute(
                    update(subscribers)
                    .where(subscribers.c.id == bindparam("b_id"))
                    .values(
                        updated_at=now,
                        **{k: bindparam(f"b_{k}", type_=subscribers.c[k].type) for k in PREFERENCES},
                    ),
                    pref_updates,
                )
            if confirm_updates:
                conn.execute(
                    update(subscribers)
                    .where(subscribers.c.id == bindparam("b_id"))
                    .values(state="confirmed", confirmed_at=now, updated_at=now),
                    confirm_updates,
                )
            if tokens_rows:
                insert_rows(conn, confirm_tokens, tokens_rows)
            if outbox_rows:
                from pipeline.delivery import outbox

                outbox.enqueue_batch(conn, outbox_rows)
            if events:
                insert_rows(conn, subscriber_events, events)
        if import_id is not None:
            if notes:
                conn.execute(insert(subscriber_import_errors), [{"import_id": import_id, **n} for n in notes])
            conn.execute(
                update(subscriber_imports)
                .where(subscriber_imports.c.id == import_id)
                .values(
                    total=report.total,
                    created=report.created,
                    updated=report.updated,
                    unchanged=report.unchanged,
                    skipped=report.skipped,
                    bad=report.bad,
                    confirmed_count=report.confirmed,
                    confirmations_queued=report.confirmations_queued,
                )
            )


# The batch's addresses as one parameter on PostgreSQL (a JSON array), not 1,000
# placeholders the driver parses one by one (see pipeline.store.bulk).


def _among(conn: Connection, column, values: list[str]):
    if conn.dialect.name == "postgresql":
        return column.in_(select(func.json_array_elements_text(cast(bindparam("among", json.dumps(values)), JSON_PG))))
    return column.in_(values)


# --- running an import --------------------------------------------------------------------------


def _set_status(conn: Connection, import_id: int | None, **values: Any) -> None:
    if import_id is not None:
        conn.execute(update(subscriber_imports).where(subscriber_imports.c.id == import_id).values(**values))


class _Tx:
    """Per-batch transactions on an Engine; the caller's transaction on a Connection."""

    def __init__(self, target: Engine | Connection):
        self.target = target

    def run(self, fn: Callable[[Connection], Any]) -> Any:
        if isinstance(self.target, Connection):
            return fn(self.target)
        with self.target.begin() as conn:
            return fn(conn)


def _open(path_or_stream: str | os.PathLike | IO[str]) -> tuple[IO[str], _CountingReader | None, int | None, bool]:
    if isinstance(path_or_stream, (str, os.PathLike)):
        path = Path(path_or_stream)
        counting = _CountingReader(path.open("rb"))
        text = io.TextIOWrapper(io.BufferedReader(counting), encoding="utf-8-sig", newline="")
        return text, counting, path.stat().st_size, True
    return path_or_stream, None, None, False


def run_import(
    engine_or_conn: Engine | Connection,
    settings: Settings,
    import_id: int,
    path_or_stream: str | os.PathLike | IO[str],
    *,
    progress: Progress | None = None,
    dry_run: bool = False,
    batch_rows: int = 1000,
    now: dt.datetime | None = None,
    keep_notes: int | None = KEEP_NOTES,
) -> ImportReport:
    """Run the import `import_id` (from `create_import`) over a CSV file or text stream
    (columns email,name,frequency,topics,timezone; topics separated by ';').

    Returns the report (counts, the first `keep_notes` row notes; all of them are in
    the database). `progress(report)` is called after each batch. On an error the
    import is marked failed (with the message) and the error raised; the batches
    written before it stay, and importing the file again completes it (IMP-4).
    Given a Connection, everything (the status too) is in the caller's transaction.
    `keep_notes` None keeps every note in the report."""
    if not 1 <= batch_rows <= MAX_BATCH_ROWS:
        raise ValueError(f"batch_rows must be 1 to {MAX_BATCH_ROWS:,} (SQLite's limit on parameters per statement)")
    now = now or utcnow()
    tx = _Tx(engine_or_conn)
    job = tx.run(lambda c: get_import(c, import_id, errors_limit=0))
    source, confirmed, filename = job["source"], job["confirmed"], job["filename"]
    return _run(
        tx,
        settings,
        import_id,
        path_or_stream,
        source=source,
        confirmed=confirmed,
        filename=filename,
        progress=progress,
        dry_run=dry_run,
        batch_rows=batch_rows,
        now=now,
        keep_notes=keep_notes,
    )


def _run(
    tx: _Tx,
    settings: Settings,
    import_id: int | None,
    path_or_stream,
    *,
    source: str,
    confirmed: bool,
    filename: str,
    progress: Progress | None,
    dry_run: bool,
    batch_rows: int,
    now: dt.datetime,
    keep_notes: int | None,
) -> ImportReport:
    source = _consent_source(source, confirmed)
    report = ImportReport(import_id=import_id, dry_run=dry_run)
    writer = _Writer(settings, report, source=source, confirmed=confirmed, filename=filename, now=now)
    writer.keep_notes = keep_notes
    tx.run(lambda c: _set_status(c, import_id, status=ImportStatus.RUNNING, started_at=now, dry_run=dry_run))
    text, counting, size, owned = _open(path_or_stream)
    report.bytes_total = size
    try:
        parser = _Parser(settings, text, filename, confirmed)
        report.consent_columns, report.ignored_columns = parser.columns.consent, parser.columns.ignored
        rows: list[_Row] = []
        notes: list[dict] = []

        def flush() -> None:
            tx.run(lambda c: writer.flush(c, rows, notes, import_id, dry_run))
            rows.clear()
            notes.clear()
            if counting is not None:
                report.bytes_read = counting.count
            if progress is not None:
                progress(report)

        for item in parser:
            report.total += 1
            if isinstance(item, RowNote):
                writer.note(notes, item)
            else:
                rows.append(item)
            if len(rows) + len(notes) >= batch_rows:
                flush()
        flush()
    except BaseException as exc:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, UnicodeDecodeError):
            message = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        if not isinstance(tx.target, Connection):  # the caller's transaction rolls back anyway
            try:
                tx.run(
                    lambda c: _set_status(
                        c, import_id, status=ImportStatus.FAILED, finished_at=utcnow(), error=message[:2000]
                    )
                )
            except Exception:  # the database itself failed: the original error is the one to see
                log.warning("could not mark subscriber import %s failed", import_id, exc_info=True)
        raise
    finally:
        if owned:
            text.close()
    tx.run(lambda c: _set_status(c, import_id, status=ImportStatus.DONE, finished_at=utcnow()))
    return report


def import_csv_stream(
    conn: Connection,
    settings: Settings,
    stream: IO[str],
    *,
    confirmed: bool = False,
    source: str = "",
    file_name: str = "",
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """The whole import in the caller's transaction, without an import row (all notes kept)."""
    return _run(
        _Tx(conn),
        settings,
        None,
        stream,
        source=source,
        confirmed=confirmed,
        filename=file_name,
        progress=None,
        dry_run=dry_run,
        batch_rows=1000,
        now=now or utcnow(),
        keep_notes=None,
    )


__all__ = [
    "IMPORT_COLUMNS",
    "ImportReport",
    "RowNote",
    "create_import",
    "run_import",
    "get_import",
    "errors_csv",
    "import_csv_stream",
    "plain_address",
    "purge_import_notes",
]
