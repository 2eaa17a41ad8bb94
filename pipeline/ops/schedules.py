"""Schedule files: `schedules/*.toml` -> validated job definitions.

The files are the source of truth for what runs when; the scheduler syncs its job
store to them at start-up (and on SIGHUP). One file holds any number of jobs:

    [[jobs]]
    id = "digest-daily"             # stable id: job history and pause state hang off it
    stage = "digest"                # a stage name (pipeline/stages.py) or "module:function"
    args = { frequency = "daily" }  # keyword arguments for the stage
    cron = "0 7 * * *"              # standard 5-field crontab (0 or 7 = Sunday) ...
    # interval = "10m"              # ... or an interval: seconds, or "90s", "10m", "1h", "1d", "1h30m"
    timezone = "Europe/Berlin"      # IANA name; default: site.timezone
    misfire_grace_time = 300        # seconds a late run may still start; default 300
    enabled = true                  # false: keep the definition, schedule nothing

A file that does not parse, a job without an id, an unknown key or a bad value fails
start-up with the file, the job and the field named. Stage names are checked when the
scheduler syncs (`check_stages`), so a file can name a stage another module registers.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.durations import format_duration, parse_seconds
from pipeline.errors import ConfigError
from pipeline.files import folder_entries

DEFAULT_MISFIRE_GRACE_TIME = 300
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # crontab numbering: 0 = Sunday

FIELDS = {
    "id": "Stable job id (letters, digits, . _ - :); history and pause state are kept under it.",
    "stage": 'A stage name from `syndicate jobs list --stages`, or "module:function".',
    "args": 'Keyword arguments for the stage, e.g. { frequency = "daily" }.',
    "cron": "A 5-field crontab expression: minute hour day-of-month month day-of-week (0 or 7 = Sunday).",
    "interval": 'Seconds (a number) or a duration such as "90s", "10m", "1h", "1d", "1h30m".',
    "timezone": 'IANA timezone of the cron expression, e.g. "Europe/Berlin" (default: site.timezone).',
    "misfire_grace_time": "Seconds after its slot that a late run may still start (default 300).",
    "enabled": "true or false; a disabled job is kept in the file but not scheduled.",
}


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One job from a schedule file."""

    id: str
    stage: str
    args: dict[str, Any]
    cron: str | None
    interval: float | None  # seconds
    timezone: str
    misfire_grace_time: int
    enabled: bool
    source: str  # the file it came from

    @property
    def schedule_text(self) -> str:
        if self.cron:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {format_duration(self.interval)}"

    def trigger(self):
        """The APScheduler trigger for this job (aware, in the job's timezone)."""
        from apscheduler.triggers.interval import IntervalTrigger

        tz = ZoneInfo(self.timezone)
        if self.cron:
            return cron_trigger(self.cron, tz)
        return IntervalTrigger(seconds=self.interval, timezone=tz)

    def job_kwargs(self) -> dict:
        """What the stored APScheduler job passes to `pipeline.ops.scheduler:run_job`."""
        return {"job_id": self.id, "stage": self.stage, "args": dict(self.args)}


def parse_interval(value) -> float:
    """10 -> 10.0; "10m" -> 600.0; "1h30m" -> 5400.0. Raises ValueError (the one
    duration type, pipeline.durations, decides)."""
    return parse_seconds(value)


def _expand_weekdays(field: str) -> list[int]:
    """A crontab day-of-week field -> sorted day numbers, 0 = Sunday (7 also means Sunday)."""

    def day(token: str) -> int:
        token = token.strip().lower()
        if token.isdigit():
            n = int(token)
            if not 0 <= n <= 7:
                raise ValueError(f"day of week {token} is out of range 0-7")
            return n % 7
        if token[:3] in DAY_NAMES:
            return DAY_NAMES.index(token[:3])
        raise ValueError(f"{token!r} is not a day of week")

    days: set[int] = set()
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"bad step {step_text!r} in the day-of-week field")
            step = int(step_text)
        if part == "*":
            lo, hi = 0, 6
        elif "-" in part:
            a, _, b = part.partition("-")
            lo, hi = day(a), day(b)
            if b.strip() == "7":
                hi = 7
            if hi < lo:
                raise ValueError(f"range {part!r} runs backwards")
        else:
            lo = hi = day(part)
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return sorted(days)


def cron_trigger(expr: str, tz):
    """A CronTrigger with standard crontab semantics.

    APScheduler 3's `from_crontab` numbers weekdays from Monday = 0, unlike cron;
    we expand the day-of-week field to names so `1` means Monday, as operators expect.
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    if weekday == "*":
        dow = "*"
    else:
        days = _expand_weekdays(weekday)
        dow = "*" if len(days) == 7 else ",".join(DAY_NAMES[d] for d in days)
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone=tz)


def _fail(path, job: str | None, field: str | None, problem: str, hint: str | None = None):
    where = f"{path}"
    if job is not None:
        where += f": job {job!r}"
    if field is not None:
        where += f": {field}"
    raise ConfigError(f"{where}: {problem}", hint=hint or (FIELDS.get(field or "", None)))


def parse_schedule(text: str, path: str, *, default_timezone: str = "UTC") -> list[JobSpec]:
    """The jobs in one schedule file's text; raises ConfigError naming file, job and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _fail(
            path,
            None,
            None,
            f"not valid TOML ({exc})",
            "Fix the syntax; schedules/default.toml is a commented example.",
        )
    unknown = set(data) - {"jobs"}
    if unknown:
        _fail(
            path,
            None,
            None,
            f"unknown top-level key(s) {', '.join(sorted(unknown))}",
            "A schedule file holds only [[jobs]] tables.",
        )
    tables = data.get("jobs", [])
    if not isinstance(tables, list):
        _fail(path, None, "jobs", "must be [[jobs]] tables", "Write each job as a [[jobs]] table.")
    specs: list[JobSpec] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        label = f"#{index + 1}"
        job_id = table.get("id")
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            _fail(
                path, label, "id", "is missing or not a valid id" if job_id is None else f"{job_id!r} is not a valid id"
            )
        if job_id in seen:
            _fail(path, job_id, "id", "is used twice in this file", "Job ids must be unique across all schedule files.")
        seen.add(job_id)
        for key in table:
            if key not in FIELDS:
                _fail(path, job_id, key, "unknown field", f"Fields of a job: {', '.join(FIELDS)}.")
        stage = table.get("stage")
        if not isinstance(stage, str) or not stage.strip():
            _fail(path, job_id, "stage", "is missing")
        args = table.get("args", {})
        if not isinstance(args, dict):
            _fail(path, job_id, "args", f"{args!r} is not a table")
        args = _checked_args(path, job_id, stage.strip(), args)
        cron, interval = table.get("cron"), table.get("interval")
        if (cron is None) == (interval is None):
            _fail(
                path,
                job_id,
                "cron" if cron is not None else "interval",
                "give exactly one of cron or interval",
                f"cron: {FIELDS['cron']} interval: {FIELDS['interval']}",
            )
        timezone = table.get("timezone", default_timezone)
        try:
            if not isinstance(timezone, str):
                raise ValueError
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            _fail(path, job_id, "timezone", f"{timezone!r} is not an IANA timezone")
        if cron is not None:
            if not isinstance(cron, str):
                _fail(path, job_id, "cron", f"{cron!r} is not a string")
            try:
                cron_trigger(cron, tz)
            except ValueError as exc:
                _fail(path, job_id, "cron", f"{cron!r} is not valid ({exc})")
        seconds = None
        if interval is not None:
            try:
                seconds = parse_interval(interval)
            except ValueError as exc:
                _fail(path, job_id, "interval", str(exc))
        grace = table.get("misfire_grace_time", DEFAULT_MISFIRE_GRACE_TIME)
        if isinstance(grace, bool) or not isinstance(grace, int) or grace < 1:
            _fail(path, job_id, "misfire_grace_time", f"{grace!r} is not a whole number of seconds >= 1")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            _fail(path, job_id, "enabled", f"{enabled!r} is not true or false")
        specs.append(
            JobSpec(
                id=job_id,
                stage=stage.strip(),
                args=dict(args),
                cron=cron,
                interval=seconds,
                timezone=timezone,
                misfire_grace_time=grace,
                enabled=enabled,
                source=str(path),
            )
        )
    return specs


def _checked_args(path, job_id: str, stage: str, args: dict) -> dict:
    """A named stage's args checked against its declared options (pipeline.ops.stages);
    "module:function" stages are checked against their signature by check_stages."""
    from pipeline.ops.stages import STAGES, check_stage_options

    declared = next((s for s in STAGES if s.name == stage), None)
    if declared is None:
        return dict(args)
    try:
        return check_stage_options(declared, args)
    except ValueError as exc:
        _fail(path, job_id, "args", str(exc), FIELDS["args"])


def _check_signature(spec: JobSpec, func: Callable) -> None:
    """A "module:function" stage must accept every argument its job passes."""
    import inspect

    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in spec.args:
        if key not in params or key == "app":
            _fail(
                spec.source,
                spec.id,
                "args",
                f"{spec.stage} takes no argument {key!r}",
                f"Its arguments: {', '.join(k for k in params if k not in ('app', 'dry_run')) or 'none'}.",
            )


def load_schedules(folder: Path, *, default_timezone: str = "UTC") -> list[JobSpec]:
    """Every job in `folder/*.toml`, in file then file order; ids unique across files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(
            f"schedule folder {folder} does not exist",
            hint="Set paths.schedules to a folder of *.toml schedule files (the repository has schedules/default.toml).",
        )
    try:
        paths = folder_entries(folder, ".toml")
    except OSError as exc:  # never "no schedules": the scheduler would drop every job
        raise ConfigError(
            f"schedule folder {folder} cannot be listed: {exc.strerror or exc}",
            hint="Check the folder's permissions (the user running syndicate must be able to read it).",
        ) from exc
    specs: list[JobSpec] = []
    where: dict[str, str] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(path, None, None, f"cannot be read ({exc})")
        for spec in parse_schedule(text, str(path), default_timezone=default_timezone):
            if spec.id in where:
                _fail(
                    path,
                    spec.id,
                    "id",
                    f"is already defined in {where[spec.id]}",
                    "Job ids must be unique across all schedule files.",
                )
            where[spec.id] = str(path)
            specs.append(spec)
    return specs


def schedules_for(settings) -> list[JobSpec]:
    return load_schedules(settings.path("paths.schedules"), default_timezone=settings.site.timezone)


def resolve_stage(stage: str) -> Callable:
    """A stage name or "module:function" -> the callable; raises ConfigError/NotFound."""
    if ":" in stage:
        module, _, func = stage.partition(":")
        try:
            return getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"stage {stage!r} cannot be imported ({exc})",
                hint='Use a stage name or an importable "package.module:function".',
            ) from None
    from pipeline.ops.stages import get_stage

    return get_stage(stage).resolve()


def check_stages(specs: list[JobSpec]) -> None:
    """Every enabled job names a known stage (or an importable function); else ConfigError."""
    from pipeline.ops.stages import STAGES

    names = [s.name for s in STAGES]
    for spec in specs:
        if not spec.enabled:
            continue
        if ":" in spec.stage:
            try:
                func = resolve_stage(spec.stage)
            except ConfigError as exc:
                _fail(spec.source, spec.id, "stage", exc.message, exc.hint)
            _check_signature(spec, func)
        elif spec.stage not in names:
            _fail(
                spec.source,
                spec.id,
                "stage",
                f"no stage named {spec.stage!r}",
                f'Stages: {", ".join(names)}; or "module:function".',
            )


def find_job(specs: list[JobSpec], job_id: str) -> JobSpec:
    from pipeline.errors import NotFound

    for spec in specs:
        if spec.id == job_id:
            return spec
    raise NotFound(
        f"no job {job_id!r} in the schedule files",
        hint=f"Jobs: {', '.join(s.id for s in specs) or 'none'}; see `syndicate jobs list`.",
    )
