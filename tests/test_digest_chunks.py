"""Composing one large edition in chunks (issue 9, item 1): `syndicate digest compose
--chunk i/n` in parallel processes, on every database. Nobody is missed, nobody gets
two rows, parts are rendered once per variant, and the edition is complete only when
every chunk is done."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, insert, select

from pipeline.digests import editions as digests
from pipeline.errors import SyndicateError
from pipeline.store.schema import deliveries, digest_editions, digest_parts, subscribers
from tests.conftest import REPO

from .digest_helpers import add_articles, add_subscriber, at

ARTICLES = [
    {
        "slug": "sleep-one",
        "tags": "[sleep]",
        "category": "wellbeing",
        "approved_at": at(days=1),
        "date": "2026-11-03T08:00:00Z",
    },
    {
        "slug": "work-one",
        "tags": "[remote-work]",
        "category": "work",
        "approved_at": at(days=1, hours=2),
        "date": "2026-11-03T10:00:00Z",
    },
    {
        "slug": "tech-one",
        "tags": "[privacy]",
        "category": "technology",
        "approved_at": at(days=1, hours=4),
        "date": "2026-11-03T12:00:00Z",
    },
]
TOPICS = [[], ["sleep"], ["work"], ["privacy"], ["sleep", "work"], ["gardening"]]  # the last: nothing new
WHEN = at(days=1, hours=6)


def _subscribers(app, count: int) -> dict[int, str]:
    """count confirmed daily subscribers with rotating topics (+ a few that must get nothing)."""
    rows = [
        dict(
            email=f"reader{i}@example.org",
            name="",
            state="confirmed",
            frequency="daily",
            topics=TOPICS[i % len(TOPICS)],
            timezone="UTC",
            source="test",
            created_at=at(-2),
            updated_at=at(-2),
            confirmed_at=at(-1),
        )
        for i in range(count)
    ]
    with app.engine.begin() as conn:
        conn.execute(insert(subscribers), rows)
    add_subscriber(app, "unconfirmed@example.org", state="unconfirmed")
    add_subscriber(app, "weekly@example.org", frequency="weekly", confirmed_at=at(-1))
    with app.engine.connect() as conn:
        return dict(
            conn.execute(
                select(subscribers.c.id, subscribers.c.topics).where(
                    subscribers.c.frequency == "daily", subscribers.c.state == "confirmed"
                )
            ).all()
        )


def _expected(subs: dict[int, list]) -> set[int]:
    return {sid for sid, topics in subs.items() if topics != ["gardening"]}


def _outbox(app) -> list[tuple[int, str]]:
    with app.engine.connect() as conn:
        return conn.execute(select(deliveries.c.subscriber_id, deliveries.c.idempotency_key)).all()


def test_parse_chunk():
    assert digests.parse_chunk("2/4") == (2, 4)
    assert digests.parse_chunk(None) is None
    for bad in ("0/4", "5/4", "x/2", "1/0", "3"):
        with pytest.raises(SyndicateError):
            digests.parse_chunk(bad)


def test_chunks_in_turn_equal_one_full_compose(app):
    """Three chunks one after the other queue exactly what one compose would; the
    edition is complete only after the last."""
    add_articles(app, ARTICLES)
    subs = _subscribers(app, 60)
    reports = []
    seen: set[int] = set()
    for i in (1, 2, 3):
        reports.append(digests.compose(app.engine, app.settings, "daily", now=WHEN, chunk=(i, 3)))
        new = {sid for sid, _ in _outbox(app)} - seen
        assert new and all(sid % 3 == i - 1 for sid in new)  # chunk i: ids with id % 3 == i - 1
        seen |= new
        with app.engine.connect() as conn:
            completed = conn.execute(select(digest_editions.c.completed_at)).scalar_one()
        assert (completed is not None) == (i == 3)
    rows = _outbox(app)
    assert sorted(sid for sid, _ in rows) == sorted(_expected(subs))
    assert sum(r.queued for r in reports) == len(_expected(subs))
    with app.engine.connect() as conn:
        assert conn.execute(select(digest_editions.c.recipients)).scalar_one() == len(_expected(subs))
        variants = conn.execute(select(func.count()).select_from(digest_parts)).scalar_one()
    assert variants == 5  # everything, sleep, work, privacy, sleep+work: each rendered once
    # a chunk run again adds nothing; a full compose afterwards neither
    assert digests.compose(app.engine, app.settings, "daily", now=WHEN, chunk=(2, 3)).queued == 0
    assert digests.compose(app.engine, app.settings, "daily", now=WHEN).queued == 0


@pytest.mark.xdist_group("processes")
@pytest.mark.slow
def test_two_processes_compose_one_edition_at_once(app):
    """`syndicate digest compose --chunk 1/2` and `2/2` started together (PostgreSQL: truly
    concurrent; SQLite: interleaved batch by batch, one writer at a time)."""
    add_articles(app, ARTICLES)
    subs = _subscribers(app, 3000)
    config = app.settings.root / "syndicate.toml"
    with open(config, "a") as f:
        f.write("\n[digests]\nbatch_size = 100\n")  # many short batches, so the two interleave
    env = dict(os.environ, PYTHONPATH=str(REPO), SYNDICATE_FROZEN_NOW=WHEN.isoformat())
    cmd = [
        sys.executable,
        "-c",
        "from pipeline.cli import main; main()",
        "--config",
        str(config),
        "digest",
        "compose",
        "--frequency",
        "daily",
        "--chunk",
    ]
    procs = [
        subprocess.Popen(cmd + [f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in (1, 2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows = _outbox(app)
    expected = _expected(subs)
    got = [sid for sid, _ in rows]
    assert len(got) == len(set(got)), "a subscriber got two rows"
    assert set(got) == expected, f"missing {sorted(expected - set(got))[:10]}, extra {sorted(set(got) - expected)[:10]}"
    with app.engine.connect() as conn:
        edition = conn.execute(select(digest_editions)).mappings().one()
        variants = conn.execute(select(func.count()).select_from(digest_parts)).scalar_one()
        behind = conn.execute(
            select(func.count())
            .select_from(subscribers)
            .where(
                subscribers.c.frequency == "daily",
                subscribers.c.state == "confirmed",
                subscribers.c.last_digest_at.is_(None),
            )
        ).scalar_one()
    assert edition["completed_at"] is not None and edition["recipients"] == len(expected)
    assert variants == 5 and behind == 0
    assert "daily (chunk 1/2):" in outs[0] and "daily (chunk 2/2):" in outs[1]
    # the messages they queued build and send like any other (one spot check per chunk)
    from pipeline.delivery import email_builder

    with app.engine.connect() as conn:
        for sid in (min(expected), max(expected)):
            row = dict(conn.execute(select(deliveries).where(deliveries.c.subscriber_id == sid)).mappings().one())
            message = email_builder(row["kind"])(conn, app.settings, row)
            assert message is not None and row["target"].encode() in message.data
