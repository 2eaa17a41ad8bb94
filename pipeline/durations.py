"""The one duration type: config, schedules, partners and delivery all read lengths of
time through `Duration`, so "5min", "-5m" or "1e9d" fail the same way, when the
setting or schedule is loaded, naming the key (not at the first retry, hours later).

Accepted: a number of seconds (10, 2.5, "90") or number-unit parts with the units
s, m, h, d ("90s", "10m", "1h30m", "1.5h"). Never negative, never zero, never more
than `MAX_SECONDS` (a year: anything longer is a typo, and `timedelta` overflows
not far beyond).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SECONDS = 366 * 86400
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
EXAMPLES = '"90s", "10m", "1h30m", "2d" or a number of seconds'


def parse_seconds(value: object) -> float:
    """10 -> 10.0; "10m" -> 600.0; "1h30m" -> 5400.0. Raises ValueError saying why."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. {EXAMPLES}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _PART.sub("", text) == "":
            seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration; write e.g. {EXAMPLES}")
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. {EXAMPLES}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} must be more than 0 seconds")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is longer than a year")
    return seconds


class Duration(str):
    """A duration as the operator wrote it (so `config show` prints "5m", not 300.0),
    checked when it is made; `.seconds` and `.timedelta` give its length."""

    seconds: float

    def __new__(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        seconds = parse_seconds(value)
        self = super().__new__(cls, value if isinstance(value, str) else f"{value:g}")
        self.seconds = seconds
        return self

    @property
    def timedelta(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.seconds)


def parse_duration(value: object) -> dt.timedelta:
    """Any accepted duration -> timedelta (ValueError otherwise)."""
    return Duration(value).timedelta


def duration_list(value: object) -> list[Duration]:
    """A list of durations (a retry schedule); from the environment, comma separated."""
    if isinstance(value, str):
        value = [v for v in (part.strip() for part in value.split(",")) if v]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f'expected a list of durations such as ["5m", "1h"], got {value!r}')
    out = []
    for i, item in enumerate(value):
        try:
            out.append(Duration(item))
        except ValueError as exc:
            raise ValueError(f"item {i + 1}: {exc}") from None
    return out


def retry_delay(schedule: Sequence[object], attempts_so_far: int) -> dt.timedelta | None:
    """The wait before the next try after `attempts_so_far` failed tries (1-based), or
    None when the schedule is used up (the delivery or push is dead). `schedule` holds
    durations in any accepted form (they were checked when the settings loaded)."""
    index = max(attempts_so_far, 1) - 1
    if index >= len(schedule):
        return None
    item = schedule[index]
    return item if isinstance(item, dt.timedelta) else parse_duration(item)


def format_duration(seconds: float | None) -> str:
    """5400 -> "1h30m": the inverse of parse_seconds, for tables and logs."""
    if seconds is None:
        return ""
    seconds_left = float(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds_left >= size:
            n = int(seconds_left // size)
            parts.append(f"{n}{unit}")
            seconds_left -= n * size
    if seconds_left or not parts:
        parts.append(f"{seconds_left:g}s")
    return "".join(parts)
