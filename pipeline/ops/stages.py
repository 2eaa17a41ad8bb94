"""The pipeline's stages, in order. `syndicate run`, `syndicate jobs run` and the
scheduler all run stages through `run_stage`, so a stage behaves the same whichever
way it was started.

A stage is `func(app, *, dry_run=False, **options) -> dict[str, int]` (counts for the
summary and the job history). Implementations live in their own modules and are
imported when the stage runs.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

from pipeline.app import App


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    target: str  # "module:function"
    help: str
    in_run: bool = True  # part of `syndicate run`

    def resolve(self) -> Callable:
        module, _, func = self.target.partition(":")
        return getattr(importlib.import_module(module), func)


STAGES: list[Stage] = [
    Stage("ingest", "pipeline.content.ingest:ingest_stage", "content/ -> database (new revisions, policy flags, retractions)"),
    Stage("purge", "pipeline.subscribers.operator:purge_stage", "delete sign-ups never confirmed within subscribers.purge_unconfirmed_days (GDPR-2)"),
    Stage("build", "pipeline.site.build:build_stage", "approved articles -> feeds and pages in public/ (only changed files); queue WebSub pings"),
    Stage("partners", "pipeline.partners:partners_stage", "queue article.published / updated / retracted events for each webhook and Micropub partner whose filters match"),
    Stage("digest", "pipeline.digests.editions:digest_stage", "queue digests: every frequency whose edition is due (instant: newly approved articles; daily/weekly: once per period); option frequency"),
]

# Always the last stage of `syndicate run`: it sends what every stage above queued.
# Appended after the list so that stages added to the list above stay before it.
STAGES.append(Stage("bounces", "pipeline.delivery.inbound.mailbox:bounces_stage",
                    "read the inbound Maildir: bounces suppress or count, mailto: unsubscribes withdraw consent"))
STAGES.append(Stage("deliver", "pipeline.delivery.worker:deliver_stage",
                    "drain the outbox once: email (maildir or smtp) and partner pushes (dry-run safe)"))


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    from pipeline.errors import NotFound
    raise NotFound(f"no stage named {name!r}", hint=f"Stages: {', '.join(s.name for s in STAGES)}.")


def run_stage(app: App, name: str, *, dry_run: bool = False, **options) -> dict:
    return get_stage(name).resolve()(app, dry_run=dry_run, **options) or {}
