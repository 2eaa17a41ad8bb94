"""The send journal: closes the window between the server's 250 and our commit.

A message the server accepted is not recorded in the database at once (one commit
per message would cost more than the send); it is appended, right after the 250,
as one line to this process's journal file in `var/outbox-journal/` with a single
`write()` (no fsync: the data is in the kernel once `write` returns, and SIGKILL
does not take the kernel with it). The batch is then committed to the database and
the journal truncated.

Each journal file is held with an exclusive `flock` while its process lives. Before
claiming, every drain looks for journals whose lock it can take (their process is
gone), marks the deliveries they list as sent, and deletes them. So a worker that
is killed between a 250 and its commit does not cause a second send once a worker
on the same host starts again; what remains is the few microseconds between the
250 arriving and the `write()` (documented in the README, Delivery).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.engine import Engine

from pipeline.store.schema import deliveries
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

FOLDER = "outbox-journal"


def journal_dir(settings) -> Path:
    return settings.path("paths.var") / FOLDER


class Journal:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.log"
        self.path = self.folder / name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.pending = 0

    def sent(self, delivery_id: int, answer: str) -> None:
        """Called right after the server's 250 for `delivery_id`."""
        line = f"{delivery_id}\t{answer[:200].replace(chr(10), ' ').replace(chr(9), ' ')}\n"
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


def read_journal(path: Path) -> list[tuple[int, str]]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        ident, _, answer = line.partition("\t")
        if ident.isdigit():
            out.append((int(ident), answer))
    return out


def recover(folder: Path, engine: Engine) -> int:
    """Replay the journals of dead processes; returns how many deliveries it marked sent."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    recovered = 0
    for path in sorted(folder.glob("*.log")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            entries = read_journal(path)
            if entries:
                now = utcnow()
                with engine.begin() as conn:
                    for delivery_id, answer in entries:
                        n = conn.execute(
                            update(deliveries)
                            .where(deliveries.c.id == delivery_id, deliveries.c.state != "sent")
                            .values(state="sent", sent_at=now, lease_until=None, last_error=None,
                                    provider_answer=f"{answer} (recovered from journal {path.name})"[:2000],
                                    attempts=deliveries.c.attempts + 1, updated_at=now)).rowcount
                        recovered += n
                log.warning("recovered %d sent deliveries from the journal of a dead worker (%s)",
                            len(entries), path.name)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return recovered
