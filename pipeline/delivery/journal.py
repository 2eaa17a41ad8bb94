"""The send journal: closes the window between the server's 250 and our commit.

A message the server accepted is not recorded in the database at once (one commit
per message would cost more than the send); it is appended, right after the 250,
as one line to this process's journal file in `var/outbox-journal/` with a single
`write()` (no fsync: the data is in the kernel once `write` returns, and SIGKILL
does not take the kernel with it). The batch is then committed to the database and
the journal truncated.

Each journal file is held with an exclusive `flock` while its process lives (it is
created as `*.log.new`, locked, then renamed, so no live process's journal is ever
visible unlocked). Before claiming, every drain looks for journals whose lock it can
take (their process is gone), reads the file it locked (not the name again: a live
owner may have finished and deleted it meanwhile), marks the deliveries it lists as
sent, and deletes it. So a worker that is killed between a 250 and its commit does
not cause a second send once a worker on the same host starts again; what remains is
the few microseconds between the 250 arriving and the `write()` (documented in the
README, Delivery). Final refusals (hard bounce, permanent, a recipient's 5.7.x) are
journalled the same way, so a successor does not try those addresses again either.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import time
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from pipeline.files import folder_entries
from pipeline.store.schema import deliveries
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

FOLDER = "outbox-journal"


def journal_dir(settings) -> Path:
    return settings.path("paths.var") / FOLDER


UNLOCKED = ".new"  # a journal's name until its lock is taken; never read by recover()
STALE_UNLOCKED_SECONDS = 60


class Journal:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.log"
        self.path = self.folder / name
        # Created and locked under another name, then renamed (the lock stays with the
        # file): a recover() in another process never sees an unlocked *.log of a live
        # process, which it would take as a dead worker's, delete, and leave this one
        # writing to a file nobody can find after a crash.
        fresh = self.folder / (name + UNLOCKED)
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(fresh, self.path)
        except BaseException:
            os.close(fd)
            fresh.unlink(missing_ok=True)
            raise
        self.fd: int | None = fd
        self.pending = 0

    def sent(self, delivery_id: int, answer: str) -> None:
        """Called right after the server's 250 for `delivery_id`."""
        self._append(delivery_id, answer, "")

    def failed(self, delivery_id: int, kind: str, answer: str) -> None:
        """Called right after a final refusal (hard bounce, permanent, a recipient's
        5.7.x): a successor must not try the address again either (issue 19, item 8)."""
        self._append(delivery_id, answer, kind)

    def _append(self, delivery_id: int, answer: str, kind: str) -> None:
        text = answer[:200].replace(chr(10), " ").replace(chr(13), " ").replace(chr(9), " ")
        line = f"{delivery_id}\t{text}" + (f"\t{kind}" if kind else "") + "\n"
        os.write(self.fd, line.encode("utf-8", "replace"))
        self.pending += 1

    def committed(self) -> None:
        """Everything journalled so far is in the database now."""
        if self.pending:
            os.ftruncate(self.fd, 0)
            self.pending = 0

    def close(self) -> None:
        if self.fd is None:
            return
        pending = self.pending
        os.close(self.fd)
        self.fd = None
        if not pending:
            self.path.unlink(missing_ok=True)


def read_journal(path: Path) -> list[tuple[int, str, str]]:
    """(delivery id, answer, kind) per line; kind "" is a 250, else the failure's kind."""
    return parse_journal(path.read_text(encoding="utf-8", errors="replace"))


def _read_fd(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def parse_journal(text: str) -> list[tuple[int, str, str]]:
    out = []
    for line in text.splitlines():
        ident, _, rest = line.partition("\t")
        answer, _, kind = rest.partition("\t")
        if ident.isdigit():
            out.append((int(ident), answer, kind))
    return out


def recover(folder: Path, engine: Engine, *, settings=None) -> int:
    """Replay the journals of dead processes; returns how many deliveries it finished
    (sent, or failed for good; with `settings`, a hard bounce suppresses its address
    as the dead worker would have)."""
    folder = Path(folder)
    recovered = 0
    # A folder that cannot be listed raises (files.folder_entries): read as empty, it
    # would skip the recovery, and a dead worker's sends would be sent again.
    for path in _recoverable(folder):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its process finished and removed it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # its process finished and removed it after we opened it
            if path.name.endswith(UNLOCKED):  # its process died before any line was written
                path.unlink(missing_ok=True)
                continue
            entries = parse_journal(_read_fd(fd))  # this file, the one locked, not the name again
            if entries:
                recovered += _replay(engine, entries, path.name, settings)
                log.warning("recovered %d deliveries from the journal of a dead worker (%s)", len(entries), path.name)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return recovered


def _recoverable(folder: Path) -> list[Path]:
    """Every `*.log` of the folder (one listing), and the `*.log.new` of processes that
    died between creating and renaming their journal (nothing is written before the
    rename) once surely stale: never one a live process may be a microsecond from
    locking, which recover's own lock would make fail."""
    out = []
    for path in folder_entries(folder, (".log", UNLOCKED)):
        if path.name.endswith(UNLOCKED):
            try:
                if time.time() - path.stat().st_mtime <= STALE_UNLOCKED_SECONDS:
                    continue
            except FileNotFoundError:
                continue
        out.append(path)
    return out


def _replay(engine: Engine, entries: list[tuple[int, str, str]], name: str, settings) -> int:
    now = utcnow()
    done = 0
    bounced = []
    with engine.begin() as conn:
        for delivery_id, answer, kind in entries:
            note = f"{answer} (recovered from journal {name})"
            stmt = update(deliveries).where(
                deliveries.c.id == delivery_id, deliveries.c.state.notin_(("sent", "failed"))
            )
            if not kind:
                values = dict(state="sent", sent_at=now, last_error=None, provider_answer=note[:2000])
            else:
                values = dict(state="failed", last_error=f"{kind}: {note}"[:4000], provider_answer=answer[:2000])
                if kind == "hard_bounce":
                    bounced.append((delivery_id, answer))
            done += conn.execute(
                stmt.values(lease_until=None, attempts=deliveries.c.attempts + 1, updated_at=now, **values)
            ).rowcount
        if settings is not None and bounced:
            from pipeline.delivery import recipients  # the suppression list's owner, through its hook

            suppress = recipients().suppress
            targets = dict(
                conn.execute(
                    select(deliveries.c.id, deliveries.c.target).where(deliveries.c.id.in_([i for i, _ in bounced]))
                ).all()
            )
            for delivery_id, answer in bounced:
                if delivery_id in targets:
                    suppress(
                        conn,
                        settings,
                        targets[delivery_id],
                        reason="hard_bounce",
                        source="smtp",
                        detail=f"{answer} (recovered from journal {name})",
                    )
    return done
