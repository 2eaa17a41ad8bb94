"""Test-only stages, referenced from test schedule files as "tests.stage_fixtures:NAME"."""

from __future__ import annotations

import time
from pathlib import Path


def sleepy(
    app, dry_run: bool = False, seconds: float = 0, marker: str = "", fail: bool = False, release: str = ""
) -> dict:
    """Touch `marker` (if given), sleep, then return counts (or fail when asked).

    With `release` (a file path) the run does not sleep a fixed time: it lasts until the
    test creates that file, so "the job is still running" is a fact the test controls,
    not a race against a busy machine (at most two minutes, then it fails)."""
    if marker:
        Path(marker).write_text("started")
    if release:
        deadline = time.monotonic() + 120
        while not Path(release).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"sleepy was never released ({release})")
            time.sleep(0.05)
    else:
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
