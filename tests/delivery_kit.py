"""Helpers for the delivery tests (import as tests.delivery_kit): a `test` email kind and an SMTP project config.

The `test` kind builds a small message with the list headers (so DKIM has them to
sign) from the row's payload: subject, body, and `also_to` (extra recipients, for
the partial-refusal test). It keeps these tests independent of pipeline.digests.editions.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from sqlalchemy import select

from pipeline.delivery import outbox, register_email_kind
from pipeline.delivery.email.channel import OutgoingEmail
from pipeline.store.schema import deliveries
from pipeline.timeutil import utcnow

FROM = "Test Journal <digest@news.example.com>"


def build_test_email(conn, settings, row) -> OutgoingEmail:
    p = row["payload"] or {}
    msg = EmailMessage(policy=SMTP)
    msg["From"] = FROM
    msg["To"] = row["target"]
    msg["Subject"] = p.get("subject", f"Test message {row['id']}")  # MSG-5: EmailMessage refuses CR/LF
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(idstring=str(row["id"]), domain="news.example.com")
    msg["List-Id"] = "Test digest <digest.news.example.com>"
    msg["List-Unsubscribe"] = "<https://news.example.com/u/tok>, <mailto:unsub@news.example.com>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(p.get("body", "Hello.\nA line.\n.a line starting with a dot\n"))
    return OutgoingEmail(
        envelope_from="digest@news.example.com", recipients=[row["target"], *p.get("also_to", [])], data=msg.as_bytes()
    )


register_email_kind("test", build_test_email)


def enqueue_test(engine, targets, **payload) -> list[int]:
    rows = [
        dict(channel="email", target=t, kind="test", key=f"test:{t}:{payload.get('tag', '')}", payload=dict(payload))
        for t in targets
    ]
    with engine.begin() as conn:
        outbox.enqueue_many(conn, rows)
        keys = [r["key"] for r in rows]
        found = dict(
            conn.execute(
                select(deliveries.c.idempotency_key, deliveries.c.id).where(deliveries.c.idempotency_key.in_(keys))
            ).all()
        )
    return [found[k] for k in keys]


def rows_by_id(engine, ids) -> dict[int, dict]:
    with engine.connect() as conn:
        return {
            r["id"]: dict(r) for r in conn.execute(select(deliveries).where(deliveries.c.id.in_(list(ids)))).mappings()
        }


def smtp_toml(server, **delivery) -> str:
    lines = [
        "[email]",
        'backend = "smtp"',
        f'smtp_host = "{server.host}"',
        f"smtp_port = {server.port}",
        f'smtp_security = "{delivery.pop("security", "none")}"',
        "smtp_timeout = 5.0",
        "",
        "[delivery]",
    ]
    if server.ca_file and "smtp_ca_file" not in delivery:
        delivery["smtp_ca_file"] = server.ca_file
    for key, value in delivery.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"
