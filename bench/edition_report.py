"""Benchmark: `edition_report` (pipeline.digests.reports) for one edition of 10,000 and
100,000 recipients, on SQLite and (with --databases sqlite,postgresql) PostgreSQL.

    .venv/bin/python bench/edition_report.py                  # 10,000 and 100,000, SQLite
    .venv/bin/python bench/edition_report.py --sizes 20000    # one size
    .venv/bin/python bench/edition_report.py --databases postgresql   # a fresh schema on --pg-url

Per size, in the same run and on the same database file:

(a) ours: `edition_report(conn, key)`, median of --repeat runs, with migration 0008's
    indexes (deliveries.edition_id, bounce_events.delivery_id);
(b) baseline: the one query no report can avoid, `SELECT count(*) FROM deliveries
    WHERE edition_id = ?` (same index): the floor;
(c) without the 0008 indexes (dropped), the same report: what the indexes buy.

The edition is realistic for a bad day: 2% failed, 1% hard and 2% soft bounces, 0.5%
unsubscribed within 7 days (and as many after), clicks on 10 articles, plus 3 other
editions of the same size in the outbox so per-edition filtering matters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert, text  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.digests.reports import edition_report  # noqa: E402
from pipeline.store import get_engine  # noqa: E402
from pipeline.store.schema import (  # noqa: E402
    bounce_events,
    deliveries,
    digest_editions,
    edition_clicks,
    subscriber_events,
    subscribers,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
OTHER_EDITIONS = 3


def build(engine, n: int) -> str:
    now = T0
    with engine.begin() as conn:
        conn.execute(
            insert(subscribers),
            [
                dict(
                    email=f"r{i}@example.com",
                    name="",
                    state="confirmed",
                    frequency="daily",
                    topics=[],
                    timezone="UTC",
                    source="bench",
                    created_at=now,
                    updated_at=now,
                    confirmed_at=now,
                )
                for i in range(1, n + 1)
            ],
        )
        eids = []
        for e in range(OTHER_EDITIONS + 1):
            eids.append(
                conn.execute(
                    insert(digest_editions).values(
                        key=f"daily-2026-11-{3 + e:02d}",
                        frequency="daily",
                        cutoff=now + dt.timedelta(days=e),
                        article_ids=list(range(1, 11)),
                        subject="Bench",
                        recipients=n,
                        created_at=now + dt.timedelta(days=e),
                        completed_at=now + dt.timedelta(days=e),
                    )
                ).inserted_primary_key[0]
            )
        target = eids[0]
        rows = []
        for e, eid in enumerate(eids):
            sent_at = now + dt.timedelta(days=e, minutes=5)
            for i in range(1, n + 1):
                failed = i % 50 == 0
                rows.append(
                    dict(
                        channel="email",
                        target=f"r{i}@example.com",
                        kind="digest",
                        idempotency_key=f"digest:{eid}:{i}",
                        payload={},
                        state="failed" if failed else "sent",
                        attempts=1,
                        next_attempt_at=sent_at,
                        subscriber_id=i,
                        edition_id=eid,
                        sequence=0,
                        created_at=sent_at,
                        updated_at=sent_at,
                        sent_at=None if failed else sent_at,
                    )
                )
            if len(rows) >= 50_000:
                conn.execute(insert(deliveries), rows)
                rows = []
        if rows:
            conn.execute(insert(deliveries), rows)
        first_id = conn.execute(text("SELECT min(id) FROM deliveries WHERE edition_id = :e"), {"e": target}).scalar()
        bounces = []
        for i in range(1, n + 1):
            if i % 100 == 1 or i % 50 == 3:
                bounces.append(
                    dict(
                        source_key=f"b{i}",
                        email=f"r{i}@example.com",
                        kind="hard" if i % 100 == 1 else "soft",
                        decision="counted",
                        delivery_id=first_id + i - 1,
                        subscriber_id=i,
                        detail="",
                        created_at=now + dt.timedelta(hours=1),
                    )
                )
        conn.execute(insert(bounce_events), bounces)
        events = [
            dict(
                subscriber_id=i,
                kind="unsubscribed",
                at=now + dt.timedelta(days=2 if i % 400 == 7 else 12),
                source="bench",
                detail={},
            )
            for i in range(1, n + 1)
            if i % 200 == 7
        ]
        conn.execute(insert(subscriber_events), events)
        conn.execute(
            insert(edition_clicks),
            [
                dict(edition_id=target, article_id=a, count=n // (a + 3), first_at=now, last_at=now)
                for a in range(1, 11)
            ],
        )
    return "daily-2026-11-03"


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fresh_pg_schema(pg_url: str) -> tuple[str, str]:
    import secrets

    import psycopg

    name = "bench_report_" + secrets.token_hex(4)
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name, f"{pg_url}?options=-csearch_path%3D{name}"


def drop_pg_schema(pg_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def run(n: int, repeat: int, database: str = "sqlite", pg_url: str = "") -> None:
    schema = ""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = f"sqlite:///{root / 'bench.db'}"
        if database == "postgresql":
            schema, url = fresh_pg_schema(pg_url)
        (root / "syndicate.toml").write_text(
            f'[site]\nbase_url = "https://news.example.com"\n[database]\nurl = "{url}"\n'
        )
        settings = load_settings(root / "syndicate.toml", env={})
        engine = get_engine(settings.database_url)
        started = time.perf_counter()
        key = build(engine, n)
        built = time.perf_counter() - started
        with engine.connect() as conn:
            eid = conn.execute(text("SELECT id FROM digest_editions WHERE key = :k"), {"k": key}).scalar()
            report = edition_report(conn, key)
            ours = timed(lambda: edition_report(conn, key), repeat)
            floor = timed(
                lambda: conn.execute(
                    text("SELECT count(*) FROM deliveries WHERE edition_id = :e"), {"e": eid}
                ).scalar(),
                repeat,
            )
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_deliveries_edition"))
            conn.execute(text("DROP INDEX ix_bounce_events_delivery"))
        with engine.connect() as conn:
            bare = timed(lambda: edition_report(conn, key), max(1, repeat // 2))
        engine.dispose()
        if schema:
            drop_pg_schema(pg_url, schema)
    print(
        f"{database:<10} {n:>7,} recipients ({(OTHER_EDITIONS + 1) * n:,} outbox rows; built in {built:.1f}s): "
        f"report {ours * 1000:.1f} ms | floor count(*) {floor * 1000:.1f} ms | ours/floor {ours / floor:.1f}x | "
        f"without 0008 indexes {bare * 1000:.1f} ms ({bare / ours:.1f}x slower)"
    )
    print(
        f"                     sent {report['sent']:,} failed {report['failed']:,} bounced {report['bounced']} "
        f"unsubscribed_7d {report['unsubscribed_7d']:,} clicks {report['clicks']['total']:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="Comma-separated recipient counts.")
    parser.add_argument("--repeat", type=int, default=5, help="Runs per measurement (median).")
    parser.add_argument("--databases", default="sqlite", help="Comma-separated: sqlite, postgresql.")
    parser.add_argument(
        "--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test", help="PostgreSQL server to use."
    )
    args = parser.parse_args()
    for database in args.databases.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            run(n, args.repeat, database, args.pg_url)


if __name__ == "__main__":
    main()
