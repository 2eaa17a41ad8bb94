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


def _skeleton(conn: Connection, part_id: int) -> str:
    key = (conn.engine.url.render_as_string(hide_password=True), part_id)
    hit = _skeletons.get(key)
    if hit is None:
        row = conn.execute(
            select(digest_parts.c.headers, digest_parts.c.text_part, digest_parts.c.html_part).where(
                digest_parts.c.id == part_id
            )
        ).first()
        if row is None:
            raise NotFound(f"digest part {part_id} is gone", hint="Compose the digest again.")
        hit = row.headers + "\r\n" + row.text_part + row.html_part
        _skeletons[key] = hit
        while len(_skeletons) > _SKELETON_CACHE:
            _skeletons.popitem(last=False)
    else:
        _skeletons.move_to_end(key)
    return hit


def message_id(site: render.Site, idempotency_key: str, edition_key: str) -> str:
    tag = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:20]
    return f"<{edition_key}.{tag}@{site.from_domain}>"


def personal(settings: Settings, site: render.Site, sub: dict, row: dict) -> render.Personal:
    from pipeline.subscribers.links import preferences_url, unsubscribe_url

    unsub = unsubscribe_url(settings, sub["id"])
    token = unsub.rsplit("/", 1)[1]  # the same UNS-1 token names the mailto address
    return render.Personal(
        email=sub["email"],
        name=sub.get("name") or "",
        unsubscribe_url=unsub,
        preferences_url=preferences_url(settings, sub["id"]),
        message_id=message_id(
            site, row.get("idempotency_key") or "", (row.get("payload") or {}).get("edition", "digest")
        ),
        unsubscribe_mailto=f"mailto:unsubscribe+{token}@{site.unsubscribe_domain}?subject=unsubscribe",
    )


def build_digest_email(conn: Connection, settings: Settings, row: dict):
    """The 'digest' and 'instant' kinds -> the message, or None when the subscriber left,
    changed address or was suppressed since composing (BULK-4: checked at send time)."""
    from pipeline.delivery.email.channel import OutgoingEmail

    # One query: the subscriber now, and whether the address is on the suppression list.
    sub = (
        conn.execute(
            select(
                subscribers.c.id,
                subscribers.c.email,
                subscribers.c.name,
                subscribers.c.state,
                suppressions.c.reason.label("suppressed"),
            )
            .select_from(subscribers.outerjoin(suppressions, suppressions.c.email == subscribers.c.email))
            .where(subscribers.c.id == row.get("subscriber_id"))
        )
        .mappings()
        .first()
    )
    if (
        sub is None
        or sub["state"] != "confirmed"
        or sub["suppressed"] is not None
        or sub["email"].lower() != row["target"].lower()
    ):
        return None
    site = render.site_for_email(settings)
    skeleton = _skeleton(conn, int((row.get("payload") or {})["part"]))
    data = render.personalise(skeleton, personal(settings, site, dict(sub), row))
    return OutgoingEmail(envelope_from=parseaddr(site.from_address)[1], recipients=[sub["email"]], data=data)
