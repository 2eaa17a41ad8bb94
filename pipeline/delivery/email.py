"""The email channel: build each row's message, check suppression, hand it to a sender.

Senders are chosen by short name in `[email] backend`: `maildir` (the default; real
files in a Maildir) and `smtp`. A sender has `send(message) -> str` returning the
server's answer, and raises `SendFailure` with a classification when it cannot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import time
from pathlib import Path

from sqlalchemy import select

from ..config import Settings
from ..errors import ConfigError
from . import Outcome, email_builder, register_channel

log = logging.getLogger(__name__)


@dataclasses.dataclass
class OutgoingEmail:
    envelope_from: str
    recipients: list[str]
    data: bytes  # the exact bytes to send, CRLF line endings (SMTP-7)
    idempotency_key: str = ""


class SendFailure(Exception):
    """kind: transient | throttle | hard_bounce | policy | permanent | connection"""

    def __init__(self, kind: str, message: str, code: int | None = None, refused: dict | None = None):
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.refused = refused or {}


class MaildirSender:
    """Delivers into a Maildir. The file name derives from the delivery's idempotency
    key, and the write is tmp/ + rename into new/, so a re-send after a crash replaces
    the same file: the Maildir never holds a message twice."""

    name = "maildir"

    def __init__(self, path: Path):
        self.path = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().replace("/", "_").replace(":", "_")

    def send(self, message: OutgoingEmail) -> str:
        key = message.idempotency_key or hashlib.sha256(message.data).hexdigest()
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        name = f"{digest}.{self.host}"
        if (self.path / "new" / name).exists() or any((self.path / "cur").glob(name + ":*")):
            return f"250 already in maildir as {name}"
        tmp = self.path / "tmp" / f"{name}.{os.getpid()}.{time.monotonic_ns()}"
        with open(tmp, "wb") as fh:
            fh.write(message.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / "new" / name)
        return f"250 delivered to maildir as {name}"

    def close(self) -> None:
        pass


_senders: dict[str, type] = {"maildir": MaildirSender}


def register_sender(name: str, cls) -> None:
    _senders[name] = cls


def make_sender(settings: Settings):
    backend = settings.email.backend
    if backend == "maildir":
        return MaildirSender(settings.path("email.maildir"))
    if backend == "smtp":
        from . import smtp  # noqa: F401  (registers itself)
    try:
        cls = _senders[backend]
    except KeyError:
        raise ConfigError(f"unknown email backend {backend!r}",
                          hint=f"Set [email] backend to one of: {', '.join(sorted(_senders))}.") from None
    return cls.from_settings(settings) if hasattr(cls, "from_settings") else cls(settings)


def is_suppressed(conn, email: str) -> str | None:
    """Why `email` must not get mail now (suppression list), or None. Checked at send time."""
    try:
        from ..store.schema import suppressions
    except ImportError:
        return None
    row = conn.execute(select(suppressions.c.reason).where(suppressions.c.email == email.lower())).first()
    return row[0] if row else None


class EmailChannel:
    def __init__(self, settings: Settings, engine, sender=None):
        self.settings = settings
        self.engine = engine
        self.sender = sender or make_sender(settings)

    def send(self, rows: list[dict]) -> list[Outcome]:
        outcomes = []
        for row in rows:
            outcomes.append(self.send_one(row))
        return outcomes

    def send_one(self, row: dict) -> Outcome:
        with self.engine.connect() as conn:
            reason = is_suppressed(conn, row["target"]) if row["kind"] != "confirm" else None
            if reason:
                return Outcome(row["id"], "suppressed", error=f"{row['target']} is suppressed: {reason}")
            try:
                message = email_builder(row["kind"])(conn, self.settings, row)
            except KeyError:
                return Outcome(row["id"], "failed", error=f"no message builder for kind {row['kind']!r}")
            except Exception as exc:  # a bad row must not stop the batch
                log.debug("building delivery %s failed", row["id"], exc_info=True)
                return Outcome(row["id"], "failed", error=f"could not build the message: {exc}")
        if message is None:
            return Outcome(row["id"], "suppressed", error="recipient no longer subscribed")
        message.idempotency_key = row["idempotency_key"]
        try:
            answer = self.sender.send(message)
        except SendFailure as exc:
            return Outcome(row["id"], "failed" if exc.kind in ("permanent", "hard_bounce") else "retry",
                           error=str(exc), answer=str(exc.code or ""))
        return Outcome(row["id"], "sent", answer=answer)

    def close(self) -> None:
        self.sender.close()


register_channel("email", EmailChannel)
