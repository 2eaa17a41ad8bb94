"""Reading bounces: `syndicate bounces process PATH` (BNC-1, BNC-2).

PATH is a Maildir (a folder with cur/ and new/), an mbox file, a folder of .eml
files, or one .eml file. Each message is one of:

- a DSN (RFC 3464: multipart/report; report-type=delivery-status). Each per-recipient
  block (Final-Recipient, Action, Status, Diagnostic-Code) is judged:
    failed + 5.1.x / 5.2.1          hard bounce   -> the address is suppressed
    failed + 5.7.x                  policy        -> ignored for the recipient (our problem)
    failed + other 5.x.x            soft bounce   -> counted
    delayed, or 4.x.x               soft bounce   -> counted
    delivered / relayed / expanded  ignored
  `delivery.soft_bounce_limit` soft bounces within `delivery.soft_bounce_days`
  suppress the address.
- an auto-reply (Auto-Submitted other than "no", X-Autoreply, Precedence auto_reply,
  "Out of office" subjects): ignored.
- a bounce report in another format (BNC-3, issue 16 item 6): Exim's
  X-Failed-Recipients, Postfix and qmail (QSBMF) plain-text reports, Yahoo-,
  Hotmail- and Exchange-style notices, read with flufl.bounce. Each address it finds
  is judged as a DSN block would be: a permanent failure is hard (suppressed) unless
  the report gives a 5.7.x status next to the address (policy) or a status that
  `judge_recipient` calls soft; a temporary one is soft (counted).
- anything else: kind `unclassified`, decision `kept`: recorded with its sender and
  subject and left in the mailbox for the operator (`syndicate bounces list --kind
  unclassified`), never dropped silently.

Only a bounce that carries a valid VERP address (pipeline.delivery.email.verp) is acted on,
in its headers or else in the returned copy of our message (`delivery_for`): the signed
token names the delivery and so the address; a bounce with a forged, altered or
missing token changes nothing (it is recorded as ignored), so nobody can unsubscribe
someone else by mailing us a fake DSN. Every decision is a `bounce_events` row and,
when the subscriber is known, a `subscriber_events` row; processing the same mailbox
again adds nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import hashlib
import logging
import mailbox
import re
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from pipeline.config import Settings
from pipeline.delivery import emit_event, recipients
from pipeline.delivery.email import verp
from pipeline.errors import NotFound
from pipeline.store.schema import bounce_events, deliveries
from pipeline.timeutil import rfc3339, utcnow

log = logging.getLogger(__name__)

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_ADDRESS_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response)|auto:|out of (the )?office|vacation|abwesenheit)", re.IGNORECASE
)


@dataclasses.dataclass
class Decision:
    email: str
    kind: str  # hard | soft | auto_reply | unclassified | policy | delivered
    decision: str  # suppressed | counted | ignored | kept | already_seen
    status: str = ""
    action: str = ""
    delivery_id: int | None = None
    detail: str = ""


@dataclasses.dataclass
class BounceReport:
    messages: int = 0
    hard: int = 0
    soft: int = 0
    suppressed: int = 0
    ignored: int = 0
    unclassified: int = 0
    already_seen: int = 0
    decisions: list[Decision] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "decisions"}


# --- reading a mailbox ------------------------------------------------------------------


_RUNS = re.compile(r"(\d+)")


def _arrival(key: str) -> list:
    """A Maildir name's order of arrival: its numbers compared as numbers. Names are
    `<seconds>.M<microseconds>P<pid>Q<n>.<host>` (Python, Dovecot's `.M...` too) with the
    microseconds not zero-padded, so as strings `M10913` sorted before `M9876` of the
    same second, and two bounces were read in the order they did not arrive in."""
    return [int(run) if run.isdigit() else run for run in _RUNS.split(key)]


def iter_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) for every message at `path`."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no mailbox at {path}", hint="Give a Maildir folder, an mbox file or a folder of .eml files.")
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        box = mailbox.Maildir(str(path), factory=None, create=False)
        for key in sorted(box.keys(), key=_arrival):
            yield f"{path.name}/{key}", box.get_bytes(key)
        return
    if path.is_dir():
        for item in sorted(path.iterdir()):
            if item.is_file() and not item.name.startswith("."):
                yield item.name, item.read_bytes()
        return
    head = path.read_bytes()[:5]
    if head == b"From ":
        box = mailbox.mbox(str(path), factory=None, create=False)
        for key in box.keys():
            yield f"{path.name}#{key}", box.get_bytes(key)
        return
    yield path.name, path.read_bytes()


# --- understanding one message ------------------------------------------------------------


def dsn_recipients(msg) -> list[dict] | None:
    """The per-recipient blocks of a DSN, or None when `msg` is not one (BNC-2)."""
    if msg.get_content_type() != "multipart/report":
        return None
    if (msg.get_param("report-type") or "").lower() != "delivery-status":
        return None
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            if not isinstance(blocks, list):
                return []
            out = []
            for block in blocks[1:]:  # the first block is about the whole message
                rcpt = str(block.get("Final-Recipient", "") or block.get("Original-Recipient", ""))
                out.append(
                    {
                        "recipient": rcpt.split(";", 1)[-1].strip().strip("<>"),
                        "action": str(block.get("Action", "")).strip().lower(),
                        "status": _status(str(block.get("Status", ""))),
                        "diagnostic": str(block.get("Diagnostic-Code", "")).strip(),
                    }
                )
            return out
    return []


def _status(text: str) -> str:
    m = _STATUS.search(text or "")
    return ".".join(m.groups()) if m else ""


def is_auto_reply(msg, *, count_auto_submitted: bool = True) -> bool:
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if count_auto_submitted and auto and auto != "no":
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Auto-Response-Suppress", "").lower() == "all":
        return True
    if str(msg.get("Precedence", "")).strip().lower() in ("auto_reply", "auto-reply"):
        return True
    return bool(_AUTO_SUBJECT.match(str(msg.get("Subject", ""))))


def vendor_recipients(msg) -> list[dict]:
    """Recipient blocks (as `dsn_recipients` gives) of a bounce report that is not a
    DSN, found by flufl.bounce's detectors (Exim, Postfix, qmail, Yahoo, Microsoft,
    simple-match heuristics; BNC-3). Empty when nothing was found."""
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # a detector choking on odd mail: the message stays unclassified
        log.info("flufl.bounce could not read a message: %s", exc)
        return []
    text = _body_text(msg)
    out = []
    for failures, action in ((permanent, "failed"), (temporary - permanent, "delayed")):
        for raw in sorted(failures):
            address = (raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)).strip().strip("<>")
            if "@" not in address:
                continue
            status, diagnostic, enhanced = _status_near(text, address)
            # An RFC 3463 status is judged as in a DSN; without one, the detector's
            # permanent/temporary verdict decides (a bare "550" is permanent).
            kind = judge_recipient(action, status) if enhanced else ("hard" if action == "failed" else "soft")
            out.append(
                {"recipient": address, "action": action, "status": status, "diagnostic": diagnostic, "kind": kind}
            )
    return out


_SMTP_REPLY = re.compile(r"(?<![\d.#])([45])\d\d(?:[-: ]|$)")
_TEXT_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")  # not an IP address


def _body_text(msg) -> str:
    parts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text" or part.get_content_type() == "message/delivery-status":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(parts)


def _status_near(text: str, address: str) -> tuple[str, str, bool]:
    """(status, the line it came from, whether it is an RFC 3463 enhanced status) from
    the lines just after `address` in a plain-text report; a bare SMTP reply code gives
    "5.0.0"/"4.0.0"; ("", "", False) when the report gives none."""
    low, needle = text.lower(), address.lower()
    windows = []
    at = low.find(needle)
    while at >= 0 and len(windows) < 5:
        windows.append(text[at : at + 800].splitlines()[:6])
        at = low.find(needle, at + len(needle))
    for pattern, enhanced in ((_TEXT_STATUS, True), (_SMTP_REPLY, False)):
        for lines in windows:
            for line in lines:
                m = pattern.search(line)
                if m:
                    status = ".".join(m.groups()) if enhanced else f"{m.group(1)}.0.0"
                    return status, line.strip()[:300], enhanced
    return "", "", False


def _target(engine: Engine, delivery_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(deliveries.c.target).where(deliveries.c.id == delivery_id)).scalar()


def judge_recipient(action: str, status: str) -> str:
    """hard | soft | policy | delivered for one DSN recipient block."""
    if action in ("delivered", "relayed", "expanded"):
        return "delivered"
    if action == "failed" and status.startswith("5."):
        if status.startswith("5.7."):
            return "policy"
        if status.startswith("5.1.") or status == "5.2.1":
            return "hard"
        return "soft"
    if action == "failed" and not status:
        return "soft"
    return "soft"  # delayed, or a 4.x.x


def verp_delivery(settings: Settings, msg) -> int | None:
    for header in _ADDRESS_HEADERS:
        for value in msg.get_all(header, []) or []:
            for part in str(value).split(","):
                delivery_id = verp.decode(settings, part.strip())
                if delivery_id is not None:
                    return delivery_id
    return None


_VERP_IN_TEXT = re.compile(rf"{verp.PREFIX}\+[0-9a-z]{{1,13}}-[a-z2-7]{{16}}@[a-z0-9.-]+", re.IGNORECASE)


def delivery_for(settings: Settings, msg, raw: bytes) -> int | None:
    """The delivery a bounce is about: a valid VERP address in the headers, else one in
    the returned message (the copy's Return-Path; some servers send reports to a plain
    address). The token is signed either way, so text in a body cannot name a delivery
    we did not send (BNC-1)."""
    delivery_id = verp_delivery(settings, msg)
    if delivery_id is not None:
        return delivery_id
    for m in _VERP_IN_TEXT.finditer(raw.decode("utf-8", "replace")):
        delivery_id = verp.decode(settings, m.group(0))
        if delivery_id is not None:
            return delivery_id
    return None


def _has_verp_address(msg) -> bool:
    return any(verp.PREFIX + "+" in str(v).lower() for h in _ADDRESS_HEADERS for v in (msg.get_all(h, []) or []))


# --- deciding -----------------------------------------------------------------------------


def _source_key(raw: bytes, recipient: str) -> str:
    return hashlib.sha256(hashlib.sha256(raw).digest() + recipient.lower().encode("utf-8")).hexdigest()


def process_mailbox(settings: Settings, engine: Engine, path, *, dry_run: bool = False) -> BounceReport:
    report = BounceReport()
    source = f"bounces:{Path(path).name}"
    for name, raw in iter_messages(Path(path)):
        report.messages += 1
        try:
            decisions = _decide(settings, engine, raw, name)
        except Exception as exc:  # a bad message is recorded and skipped, the rest goes on
            log.warning("bounce %s could not be read: %s", name, exc)
            log.debug("bounce %s", name, exc_info=True)
            decisions = [("", Decision("", "unclassified", "kept", detail=f"{name}: unreadable: {exc}"))]
        for key_recipient, d in decisions:
            if not dry_run:
                _apply(settings, engine, raw, key_recipient, d, source)
            report.decisions.append(d)
            if d.decision == "already_seen":
                report.already_seen += 1
                continue
            report.hard += d.kind == "hard"
            report.soft += d.kind == "soft"
            report.suppressed += d.decision == "suppressed"
            report.ignored += d.decision == "ignored"
            report.unclassified += d.kind == "unclassified"
    return report


def _decide(settings: Settings, engine: Engine, raw: bytes, name: str) -> list[tuple[str, Decision]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    blocks = dsn_recipients(msg)
    if blocks is None:
        sender = email.utils.parseaddr(str(msg.get("From", "")))[1].lower()
        # A vacation notice says so in its own headers or subject; "Auto-Submitted:
        # auto-replied" alone is no proof, since bounces carry it too (RFC 3834 3.1.7).
        vacation = is_auto_reply(msg, count_auto_submitted=False)
        blocks = [] if vacation else vendor_recipients(msg)
        if not blocks:
            if vacation or is_auto_reply(msg):
                return [("", Decision(sender, "auto_reply", "ignored", detail=f"{name}: auto-reply"))]
            subject = str(msg.get("Subject", "")).strip()[:200]
            detail = (
                f"{name}: not a bounce report Syndicate can read (from {sender or '?'}, subject {subject!r}); "
                "kept in the mailbox for the operator"
            )
            return [("", Decision(sender, "unclassified", "kept", detail=detail))]
        if len(blocks) > 1:  # one delivery per VERP address: the block about its recipient wins
            delivery_id = delivery_for(settings, msg, raw)
            target = _target(engine, delivery_id) if delivery_id is not None else None
            mine = [b for b in blocks if target and b["recipient"].lower() == target.lower()]
            if target is not None:
                blocks = mine[:1] or blocks[:1]
    delivery_id = delivery_for(settings, msg, raw)
    row = None
    if delivery_id is not None:
        with engine.connect() as conn:
            row = (
                conn.execute(
                    select(deliveries.c.id, deliveries.c.target, deliveries.c.subscriber_id).where(
                        deliveries.c.id == delivery_id
                    )
                )
                .mappings()
                .first()
            )
    out = []
    for block in blocks or [{"recipient": "", "action": "", "status": "", "diagnostic": ""}]:
        kind = block.get("kind") or judge_recipient(block["action"], block["status"])
        detail = f"{name}: {block['action'] or '?'} {block['status'] or '?'} {block['diagnostic']}".strip()
        if row is None:
            why = "forged or altered VERP token" if _has_verp_address(msg) else "no VERP address"
            out.append(
                (
                    block["recipient"],
                    Decision(
                        block["recipient"].lower(),
                        kind,
                        "ignored",
                        block["status"],
                        block["action"],
                        delivery_id,
                        f"{detail} ({why}; not acted on)",
                    ),
                )
            )
            continue
        address = row["target"].lower()
        decision = {"hard": "suppressed", "soft": "counted"}.get(kind, "ignored")
        out.append(
            (
                block["recipient"] or address,
                Decision(address, kind, decision, block["status"], block["action"], row["id"], detail),
            )
        )
    return out


def count_soft_bounce(
    settings: Settings, engine: Engine, address: str, *, delivery_id: int, detail: str, source: str = "smtp"
) -> Decision:
    """A refusal at send time that is this recipient's, not ours, yet not a dead
    address (5.7.x at RCPT, issue 19 item 2): counted like a soft bounce from a DSN,
    so `delivery.soft_bounce_limit` of them suppress the address. Recording the same
    delivery twice counts once."""
    d = Decision(
        address.lower(),
        "soft",
        "counted",
        status=_status(detail.rpartition(" refused")[2]),
        action="failed",
        delivery_id=delivery_id,
        detail=detail[:4000],
    )
    _apply(settings, engine, f"{source}:{delivery_id}".encode(), address, d, source)
    return d


def _apply(settings: Settings, engine: Engine, raw: bytes, key_recipient: str, d: Decision, source: str) -> None:
    d_set = settings.delivery
    now = utcnow()
    with engine.begin() as conn:
        ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(bounce_events)
        added = (
            conn.execute(
                ins.values(
                    source_key=_source_key(raw, key_recipient or d.email),
                    email=d.email or "",
                    kind=d.kind,
                    status=d.status,
                    action=d.action,
                    decision=d.decision,
                    delivery_id=d.delivery_id,
                    subscriber_id=None,
                    detail=d.detail[:4000],
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["source_key"])
                .returning(bounce_events.c.id)
            ).first()
            is not None
        )
        if not added:
            d.decision = "already_seen"
            return
        if d.delivery_id is None or not d.email:
            log.info("bounce ignored: %s", d.detail)
            return
        subscriber_id = recipients().subscriber_id_for(conn, d.email)
        if d.kind == "soft" and d.decision == "counted":
            since = now - dt.timedelta(days=d_set.soft_bounce_days)
            count = conn.execute(
                select(func.count())
                .select_from(bounce_events)
                .where(
                    bounce_events.c.email == d.email,
                    bounce_events.c.kind == "soft",
                    bounce_events.c.delivery_id.is_not(None),
                    bounce_events.c.created_at >= since,
                )
            ).scalar_one()
            if d_set.soft_bounce_limit > 0 and count >= d_set.soft_bounce_limit:
                d.decision = "suppressed"
                recipients().suppress(
                    conn,
                    settings,
                    d.email,
                    reason="soft_bounces",
                    source=source,
                    detail=f"{count} soft bounces within {d_set.soft_bounce_days} days; last: {d.detail}",
                )
            d.detail += f" (soft bounce {count} of {d_set.soft_bounce_limit} within {d_set.soft_bounce_days} days)"
        elif d.kind == "hard":
            recipients().suppress(conn, settings, d.email, reason="hard_bounce", source=source, detail=d.detail)
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == d.delivery_id)
                .values(last_error=f"bounced after delivery: {d.detail}"[:4000])
            )
        conn.execute(
            update(bounce_events)
            .where(bounce_events.c.source_key == _source_key(raw, key_recipient or d.email))
            .values(decision=d.decision, subscriber_id=subscriber_id, detail=d.detail[:4000])
        )
        recipients().log_subscriber_event(
            conn,
            subscriber_id,
            f"bounce_{d.kind}",
            source=source,
            detail={
                "decision": d.decision,
                "status": d.status,
                "action": d.action,
                "delivery_id": d.delivery_id,
                "detail": d.detail[:500],
            },
        )
        if d.kind in ("hard", "soft"):
            emit_event(
                conn,
                settings,
                "subscriber.bounced",
                {
                    "subscriber_id": subscriber_id,
                    "email": d.email,
                    "bounce": d.kind,
                    "decision": d.decision,
                    "status": d.status,
                    "delivery_id": d.delivery_id,
                    "at": rfc3339(now),
                },
                key=_source_key(raw, key_recipient or d.email),
            )
