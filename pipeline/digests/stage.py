"""The `digest` stage: compose every frequency that is due (see pipeline.digests.editions
for the whole story). Its own module so that editions (periods, keys, labels) imports
nothing that imports it back."""

from __future__ import annotations

import datetime as dt

from pipeline.digests.compose import compose, parse_chunk
from pipeline.digests.editions import FREQUENCIES, _check_frequency, is_due
from pipeline.timeutil import utcnow


def digest_stage(
    app,
    *,
    dry_run: bool = False,
    frequency: str | None = None,
    now: dt.datetime | None = None,
    chunk: str | None = None,
    **_options,
) -> dict:
    """The `digest` stage. With `frequency`: compose that one. Without: compose every
    frequency that is due (instant always; daily/weekly once per period). `chunk="i/n"`
    (schedule args): only that share of the subscribers (see `compose`)."""
    now = now or utcnow()
    if frequency:
        frequencies = [_check_frequency(frequency)]
    else:
        with app.engine.connect() as conn:
            frequencies = [f for f in FREQUENCIES if is_due(conn, app.settings, f, now)]
    counts: dict[str, int] = {}
    for f in frequencies:
        report = compose(app.engine, app.settings, f, now=now, dry_run=dry_run, chunk=parse_chunk(chunk))
        counts[f"{f}_queued"] = report.queued
        if report.editions and f != "instant":
            counts[f"{f}_editions"] = len(report.editions)
    return counts
