"""Closed sets of states, named once.

Each is a `StrEnum`, so a member is the very string stored in the database and
compares equal to it (`SubscriberState.CONFIRMED == "confirmed"`): code that wrote
bare strings keeps working, and the schema turns each set into a CHECK constraint
(`pipeline.store.schema`, migration 0002), so a misspelt state can no longer reach a
row. Adding a state means adding it here and a migration that widens the CHECK.
"""

from __future__ import annotations

import enum


class SubscriberState(enum.StrEnum):
    """listmonk's subscription status, plus suppressed (bounces, complaints)."""

    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


class Frequency(enum.StrEnum):
    INSTANT = "instant"
    DAILY = "daily"
    WEEKLY = "weekly"


class DeliveryState(enum.StrEnum):
    """An outbox row: queued -> sending -> sent, or back to retry, or an end state."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DEAD = "dead"
    CANCELLED = "cancelled"


class RevisionState(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETRACTED = "retracted"  # an editor took an approved article off (the desk, issue 13)
    SUPERSEDED = "superseded"


class ApprovalDecision(enum.StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    RETRACTED = "retracted"  # an editor took an approved article off (the desk, issue 13)


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCES = "soft_bounces"
    COMPLAINT = "complaint"
    MANUAL = "manual"


class JobRunStatus(enum.StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    MISSED = "missed"


class WorkerState(enum.StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class PartnerState(enum.StrEnum):
    """active; paused by the circuit breaker (until paused_until); disabled (410 Gone
    or the operator: only `syndicate partners resume` lifts it)."""

    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class ImportStatus(enum.StrEnum):
    """A subscriber import (pipeline.subscribers.imports): queued -> running -> done | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def check_sql(column: str, states: type[enum.StrEnum]) -> str:
    """The CHECK expression that keeps `column` inside `states`."""
    return f"{column} IN ({', '.join(repr(s.value) for s in states)})"


# (table, column, enum): the closed columns, turned into CHECK constraints by
# pipeline.store.schema. Migration 0002 holds the same constraints written out (frozen);
# tests/test_states.py checks that a migrated database has every one of them.
CHECKED_COLUMNS: list[tuple[str, str, type[enum.StrEnum]]] = [
    ("subscribers", "state", SubscriberState),
    ("subscribers", "frequency", Frequency),
    ("deliveries", "state", DeliveryState),
    ("revisions", "state", RevisionState),
    ("approvals", "decision", ApprovalDecision),
    ("suppressions", "reason", SuppressionReason),
    ("job_runs", "status", JobRunStatus),
    ("delivery_workers", "state", WorkerState),
    ("partner_state", "state", PartnerState),
]


def constraint_name(table: str, column: str) -> str:
    return f"ck_{table}_{column}"
