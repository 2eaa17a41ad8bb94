"""The message at send time: the 'digest' and 'instant' email kinds. The builder checks
the subscriber is still confirmed, at the same address and not suppressed (BULK-4),
then splices their personal values into the part's stored MIME skeleton."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from email.utils import parseaddr

from sqlalchemy import select
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.digests import render
from pipeline.errors import NotFound
from pipeline.store.schema import digest_parts, subscribers, suppressions

_skeletons: OrderedDict = OrderedDict()
_SKELETON_CACHE = 64
_ID_CHUNK = 1000  # ids per IN (...) query: far below SQLite's and psycopg's parameter limits


def _skeletons_for(conn: Connection, part_ids: set[int]) -> dict[int, render.Skeleton]:
    """{part id: MIME skeleton, split at its markers}; the parts not cached yet are
    read in one query (an edition's batch shares a handful of parts). A part that is
    gone is left out."""
    db = conn.engine.url.render_as_string(hide_password=True)
    found: dict[int, render.Skeleton] = {}
    missing = []
    for pid in part_ids:
        hit = _skeletons.get((db, pid))
        if hit is None:
            missing.append(pid)
        else:
            _skeletons.move_to_end((db, pid))
            found[pid] = hit
    if missing:
        for row in conn.execute(
            select(digest_parts.c.id, digest_parts.c.headers, digest_parts.c.text_part, digest_parts.c.html_part).where(
                digest_parts.c.id.in_(missing)
            )
        ):
            found[row.id] = _skeletons[(db, row.id)] = render.Skeleton(
                row.headers + "\r\n" + row.text_part + row.html_part
            )
        while len(_skeletons) > _SKELETON_CACHE:
            _skeletons.popitem(last=False)
    return found


def _subscribers_now(conn: Connection, ids: set[int]) -> dict[int, dict]:
    """The batch's subscribers as they are now, each with whether the address is on the
    suppression list: one query per 1,000 subscribers."""
    wanted = sorted(ids)
    out: dict[int, dict] = {}
    for i in range(0, len(wanted), _ID_CHUNK):
        rows = conn.execute(
            select(
                subscribers.c.id,
                subscribers.c.email,
                subscribers.c.name,
                subscribers.c.state,
                suppressions.c.reason.label("suppressed"),
            )
            .select_from(subscribers.outerjoin(suppressions, suppressions.c.email == subscribers.c.email))
            .where(subscribers.c.id.in_(wanted[i : i + _ID_CHUNK]))
        ).mappings()
        out.update((r["id"], dict(r)) for r in rows)
    return out


def message_id(site: render.Site, idempotency_key: str, edition_key: str) -> str:
    tag = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:20]
    return f"<{edition_key}.{tag}@{site.from_domain}>"


def personal(
    settings: Settings, site: render.Site, sub: dict, row: dict, links=None, date: str = ""
) -> render.Personal:
    """`links`: a `ListLinks` shared by a batch (made here when None); `date`: the Date
    header value shared by a batch ("": now)."""
    from pipeline.subscribers.links import ListLinks

    links = links or ListLinks(settings)
    unsub = links.unsubscribe_url(sub["id"])
    token = unsub.rsplit("/", 1)[1]  # the same UNS-1 token names the mailto address
    return render.Personal(
        email=sub["email"],
        name=sub.get("name") or "",
        unsubscribe_url=unsub,
        preferences_url=links.preferences_url(sub["id"]),
        message_id=message_id(
            site, row.get("idempotency_key") or "", (row.get("payload") or {}).get("edition", "digest")
        ),
        unsubscribe_mailto=f"mailto:unsubscribe+{token}@{site.unsubscribe_domain}?subject=unsubscribe",
        date=date,
    )


def _still_wanted(sub: dict | None, row: dict) -> bool:
    """BULK-4, at send time: still confirmed, at the address composed for, not suppressed."""
    return (
        sub is not None
        and sub["state"] == "confirmed"
        and sub["suppressed"] is None
        and sub["email"].lower() == row["target"].lower()
    )


def build_many(conn: Connection, settings: Settings, rows: list[dict]) -> list:
    """The 'digest' and 'instant' kinds for a whole claimed batch (issue 15 item 1): one
    query for the subscribers and their suppressions, one for the parts not cached, the
    links signed with the key looked up once. One result per row, in order: the
    message; None when the subscriber left, changed address or was suppressed since
    composing (BULK-4, as strict as one by one); or the exception that stopped this
    row alone (a part gone, a header value refused)."""
    from pipeline.delivery.email.channel import OutgoingEmail
    from pipeline.subscribers.links import ListLinks

    site = render.site_for_email(settings)
    links = ListLinks(settings)
    subs = _subscribers_now(conn, {r["subscriber_id"] for r in rows if r.get("subscriber_id") is not None})
    parts: set[int] = set()
    for row in rows:
        try:
            parts.add(int((row.get("payload") or {})["part"]))
        except (KeyError, TypeError, ValueError):
            pass  # reported for that row below
    skeletons = _skeletons_for(conn, parts) if parts else {}
    envelope_from = parseaddr(site.from_address)[1]
    date = render.date_header()  # the batch is built within the second or so Date can tell
    out: list = []
    for row in rows:
        sub = subs.get(row.get("subscriber_id"))
        if not _still_wanted(sub, row):
            out.append(None)
            continue
        try:
            part = int((row.get("payload") or {})["part"])
            skeleton = skeletons.get(part)
            if skeleton is None:
                raise NotFound(f"digest part {part} is gone", hint="Compose the digest again.")
            filled = render.personalise_checked(skeleton, personal(settings, site, sub, row, links, date))
        except Exception as exc:  # this row's failure; the batch goes on
            out.append(exc)
            continue
        out.append(
            OutgoingEmail(
                envelope_from=envelope_from,
                recipients=[sub["email"]],
                data=filled.data,
                crlf=filled.crlf,
                dot_free=filled.dot_free,
            )
        )
    return out


def build_digest_email(conn: Connection, settings: Settings, row: dict):
    """The 'digest' and 'instant' kinds -> the message, or None when the subscriber left,
    changed address or was suppressed since composing (BULK-4: checked at send time).
    One row through `build_many`, so one by one and in batches give the same bytes."""
    (result,) = build_many(conn, settings, [row])
    if isinstance(result, Exception):
        raise result
    return result


# The email channel builds a claimed batch at once with a kind's `many` when it has one.
build_digest_email.many = build_many  # type: ignore[attr-defined]
