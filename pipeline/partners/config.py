"""A partner's effective settings: its [[partners]] entry over the [partner_push] defaults."""

from __future__ import annotations

import dataclasses
import datetime as dt

from pipeline.config import Settings
from pipeline.durations import parse_duration
from pipeline.errors import ConfigError, NotFound
from pipeline.partners.signing import split_secrets
from pipeline.timeutil import parse_datetime

PUSH_KINDS = ("webhook", "micropub")  # kinds this package queues and sends; websub hubs belong to the feed build


@dataclasses.dataclass(frozen=True)
class Partner:
    name: str
    kind: str
    url: str
    secret_env: str
    tags: tuple[str, ...]
    categories: tuple[str, ...]
    authors: tuple[str, ...]
    enabled: bool
    allow_private: bool
    connect_timeout: float
    read_timeout: float
    retry_schedule: tuple[dt.timedelta, ...]
    max_consecutive_failures: int
    noindex: bool
    since: dt.datetime | None
    discover: bool

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    @property
    def pushes_articles(self) -> bool:
        return self.kind in PUSH_KINDS

    def matches(self, article) -> bool:
        """The partner's filters: each non-empty list must match (tags: any shared)."""
        if self.tags and not {t.lower() for t in self.tags} & {t.lower() for t in article.tags}:
            return False
        if self.categories and article.category.lower() not in {c.lower() for c in self.categories}:
            return False
        if self.authors and article.author_slug.lower() not in {a.lower() for a in self.authors}:
            return False
        if self.since is not None and article.approved_at < self.since:
            return False
        return True


def partner_from_config(settings: Settings, raw: dict) -> Partner:
    push = settings.partner_push
    since = None
    if raw.get("since"):
        try:
            since = parse_datetime(raw["since"])
        except ValueError:
            raise ConfigError(
                f"partner {raw['name']!r}: since = {raw['since']!r} is not a date",
                hint='Use ISO 8601, e.g. since = "2026-11-01".',
            ) from None
    schedule = raw.get("retry_schedule") or push.retry_schedule
    return Partner(
        name=raw["name"],
        kind=raw["kind"],
        url=raw["url"],
        secret_env=raw.get("secret_env", ""),
        tags=tuple(raw.get("tags", ())),
        categories=tuple(raw.get("categories", ())),
        authors=tuple(raw.get("authors", ())),
        enabled=raw.get("enabled", True),
        allow_private=raw.get("allow_private", False),
        connect_timeout=float(raw.get("connect_timeout") or push.connect_timeout),
        read_timeout=float(raw.get("read_timeout") or push.read_timeout),
        retry_schedule=tuple(parse_duration(s) for s in schedule),  # checked when the settings loaded
        max_consecutive_failures=int(
            raw["max_consecutive_failures"] if "max_consecutive_failures" in raw else push.max_consecutive_failures
        ),
        noindex=bool(raw["noindex"] if "noindex" in raw else push.require_partner_noindex),
        since=since,
        discover=raw.get("discover", False),
    )


def partners(settings: Settings) -> list[Partner]:
    return [partner_from_config(settings, p) for p in settings.partners]


def get_partner(settings: Settings, name: str) -> Partner:
    for p in settings.partners:
        if p["name"] == name:
            return partner_from_config(settings, p)
    known = ", ".join(p["name"] for p in settings.partners) or "none configured"
    raise NotFound(
        f"no partner named {name!r}",
        hint=f"Partners: {known}. Add one as a [[partners]] table in {settings.source or 'syndicate.toml'}.",
    )


def secrets_of(settings: Settings, partner: Partner) -> list[str]:
    """The partner's secrets (webhook: whsec_..., several during rotation; micropub: one token)."""
    return split_secrets(settings.partner_secret({"secret_env": partner.secret_env}))
