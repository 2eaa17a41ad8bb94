"""The pipeline's stages, in order. `syndicate run`, `syndicate jobs run` and the
scheduler all run stages through `run_stage`, so a stage behaves the same whichever
way it was started.

A stage is `func(app, *, dry_run=False, **options) -> dict[str, int]` (counts for the
summary and the job history). Implementations live in their own modules and are
imported when the stage runs. The options a schedule file may pass (`args = {...}`)
are declared here with a check each, so a misspelt `frequncy` or a bad value stops
the scheduler at start-up instead of being swallowed by the stage's `**options`.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from typing import Any

from pipeline.app import App


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    target: str  # "module:function"
    help: str
    in_run: bool = True  # part of `syndicate run`
    # option name -> check(value) returning the value or raising ValueError
    options: dict[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)

    def resolve(self) -> Callable:
        module, _, func = self.target.partition(":")
        return getattr(importlib.import_module(module), func)


def _one_of(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return check


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a whole number >= 1")
    return value


def _chunk(value: Any) -> str:
    match = re.fullmatch(r"(\d+)/(\d+)", value) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f'{value!r} is not a chunk "i/n" with 1 <= i <= n')
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


STAGES: list[Stage] = [
    Stage(
        "ingest",
        "pipeline.content.sources.runner:ingest_stage",
        "every [[sources]] entry (default: content/) -> database (new revisions, policy flags, retractions)",
    ),
    Stage(
        "purge",
        "pipeline.subscribers.operator:purge_stage",
        "delete sign-ups never confirmed within subscribers.purge_unconfirmed_days (GDPR-2)",
        options={"days": _positive_int},
    ),
    Stage(
        "build",
        "pipeline.site.build:build_stage",
        "approved articles -> feeds and pages in public/ (only changed files); queue WebSub pings",
    ),
    Stage(
        "partners",
        "pipeline.partners:partners_stage",
        "queue article.published / updated / retracted events for each webhook and Micropub partner whose filters match",
    ),
    Stage(
        "digest",
        "pipeline.digests.stage:digest_stage",
        "queue digests: every frequency whose edition is due (instant: newly approved articles; daily/weekly: once per period); option frequency",
        options={"frequency": _one_of("instant", "daily", "weekly"), "chunk": _chunk},
    ),
]

# Always the last stage of `syndicate run`: it sends what every stage above queued.
# Appended after the list so that stages added to the list above stay before it.
STAGES.append(
    Stage(
        "bounces",
        "pipeline.delivery.inbound.mailbox:bounces_stage",
        "read the inbound Maildir: bounces suppress or count, mailto: unsubscribes withdraw consent",
        options={"path": _text},
    )
)
STAGES.append(
    Stage(
        "deliver",
        "pipeline.delivery.worker:deliver_stage",
        "drain the outbox once: email (maildir or smtp) and partner pushes (dry-run safe)",
        options={"limit": _positive_int},
    )
)


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    from pipeline.errors import NotFound

    raise NotFound(f"no stage named {name!r}", hint=f"Stages: {', '.join(s.name for s in STAGES)}.")


def check_stage_options(stage: Stage, options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against what `stage` declares; ValueError names the first bad one."""
    checked = {}
    for key, value in options.items():
        check = stage.options.get(key)
        if check is None:
            known = ", ".join(stage.options) or "none"
            raise ValueError(f"stage {stage.name!r} takes no option {key!r} (its options: {known})")
        try:
            checked[key] = check(value)
        except ValueError as exc:
            raise ValueError(f"option {key!r}: {exc}") from None
    return checked


def run_stage(app: App, name: str, *, dry_run: bool = False, **options) -> dict:
    return get_stage(name).resolve()(app, dry_run=dry_run, **options) or {}
