"""Test-only stages, referenced from test schedule files as "tests.stage_fixtures:NAME"."""

from __future__ import annotations

import time
from pathlib import Path


def sleepy(app, dry_run: bool = False, seconds: float = 0, marker: str = "", fail: bool = False) -> dict:
    """Touch `marker` (if given), sleep, then return counts (or fail when asked)."""
    if marker:
        Path(marker).write_text("started")
    time.sleep(seconds)
    if fail:
        raise RuntimeError("sleepy was asked to fail")
    return {"slept": int(seconds), "dry_run": int(bool(dry_run))}


_probe = {"running": 0, "max": 0}


def overlap_probe(app, dry_run: bool = False, seconds: float = 0.2) -> dict:
    """Counts how many runs of this stage are in progress at once (SCHED-3 serialisation)."""
    _probe["running"] += 1
    _probe["max"] = max(_probe["max"], _probe["running"])
    time.sleep(seconds)
    _probe["running"] -= 1
    return {"max_parallel": _probe["max"]}
