"""Closed states as enums, kept by CHECK constraints (issue 17 item 2, migration 0002)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from pipeline.states import CHECKED_COLUMNS, SubscriberState, constraint_name
from pipeline.store import alembic_config, current_revision, get_engine, make_engine, upgrade
from pipeline.store.schema import subscriber_events, subscribers
from pipeline.timeutil import utcnow


def test_enum_members_are_the_stored_strings():
    assert SubscriberState.CONFIRMED == "confirmed" and f"{SubscriberState.CONFIRMED}" == "confirmed"


def test_every_closed_column_has_its_check_constraint(db_url):
    engine = get_engine(db_url)
    found = {}
    for table, column, _states in CHECKED_COLUMNS:
        names = {c["name"] for c in inspect(engine).get_check_constraints(table)}
        found[(table, column)] = constraint_name(table, column) in names
    assert all(found.values()), found


def test_a_misspelt_state_cannot_reach_a_row(db_url):
    engine = get_engine(db_url)
    now = utcnow()
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(
                insert(subscribers).values(
                    email="a@example.com",
                    state="confirmd",
                    frequency="weekly",
                    topics=[],
                    created_at=now,
                    updated_at=now,
                )
            )
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(
                insert(subscribers).values(
                    email="a@example.com",
                    state="confirmed",
                    frequency="hourly",
                    topics=[],
                    created_at=now,
                    updated_at=now,
                )
            )
    with engine.begin() as conn:
        conn.execute(
            insert(subscribers).values(
                email="a@example.com",
                state=SubscriberState.CONFIRMED,
                frequency="weekly",
                topics=[],
                created_at=now,
                updated_at=now,
            )
        )


def test_migration_0002_adds_constraints_and_keeps_every_row(db_url):
    """From 0001 with data: the batch copy on SQLite must not cascade-delete children."""
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        now = utcnow()
        with engine.begin() as conn:
            sid = conn.execute(
                insert(subscribers)
                .values(
                    email="b@example.com",
                    state="confirmed",
                    frequency="daily",
                    topics=["x"],
                    created_at=now,
                    updated_at=now,
                )
                .returning(subscribers.c.id)
            ).scalar_one()
            conn.execute(
                insert(subscriber_events).values(subscriber_id=sid, kind="confirmed", at=now, source="t", detail={})
            )
        upgrade(engine, "0002")
        assert current_revision(engine) == "0002"
        with engine.connect() as conn:
            assert conn.execute(select(subscribers.c.email, subscribers.c.topics)).all() == [("b@example.com", ["x"])]
            assert conn.execute(select(subscriber_events.c.kind)).scalars().all() == ["confirmed"]
            if conn.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        command.downgrade(alembic_config(engine), "0001")
        assert "ck_subscribers_state" not in {c["name"] for c in inspect(engine).get_check_constraints("subscribers")}
    finally:
        engine.dispose()
