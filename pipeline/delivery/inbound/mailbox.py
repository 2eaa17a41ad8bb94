"""Mail that comes back to us: bounces, auto-replies and mailto: unsubscribe requests.

The MTA delivers everything addressed to the bounce domain (`bounces+TOKEN@` from VERP
and `unsubscribe+TOKEN@` from the List-Unsubscribe mailto: URI) into one Maildir,
`[email] inbound_mailbox`. The `bounces` stage reads it: unsubscribe requests withdraw
consent (the token is the same signed UNS-1 token as in the https link, so a forged
address unsubscribes nobody); everything else goes to the bounce processor (DSNs
suppress or count, auto-replies are ignored). Both are idempotent, so a message read
twice changes nothing the second time.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re

from pipeline.delivery.inbound.bounces import iter_messages, process_mailbox
from pipeline.errors import TokenError

log = logging.getLogger(__name__)
UNSUB_RE = re.compile(r"unsubscribe\+([A-Za-z0-9_.=-]+)@", re.I)
ADDRESS_HEADERS = ("Delivered-To", "X-Original-To", "To", "Envelope-To")


def unsubscribe_token(raw: bytes) -> str | None:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for header in ADDRESS_HEADERS:
        for value in msg.get_all(header, []) or []:
            match = UNSUB_RE.search(str(value))
            if match:
                return match.group(1)
    return None


def process_unsubscribe_requests(app, path, *, dry_run: bool = False) -> dict:
    from pipeline import subscribers
    counts = {"unsubscribe_requests": 0, "unsubscribed": 0, "unsubscribe_invalid": 0}
    for name, raw in iter_messages(path):
        token = unsubscribe_token(raw)
        if token is None:
            continue
        counts["unsubscribe_requests"] += 1
        try:
            subscriber_id = subscribers.verify_list_token(app.settings, "unsubscribe", token)
        except TokenError:
            counts["unsubscribe_invalid"] += 1
            log.warning("ignored an unsubscribe request with an invalid token (%s)", name)
            continue
        if dry_run:
            continue
        with app.engine.begin() as conn:
            if subscribers.unsubscribe(conn, app.settings, subscriber_id,
                                       client=subscribers.Client(source="mailto")):
                counts["unsubscribed"] += 1
    return counts


def bounces_stage(app, *, dry_run: bool = False, path: str | None = None, **_options) -> dict:
    """Read the inbound Maildir once (see the module docstring)."""
    mailbox = app.settings.path("email.inbound_mailbox") if path is None else path
    from pathlib import Path

    if not Path(mailbox).exists():
        return {"messages": 0}
    counts = process_unsubscribe_requests(app, mailbox, dry_run=dry_run)
    report = process_mailbox(app.settings, app.engine, mailbox, dry_run=dry_run)
    counts.update(report.counts())
    return counts
