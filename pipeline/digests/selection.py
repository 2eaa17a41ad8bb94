"""Which articles each subscriber gets: the ones first approved after their watermark
and up to the edition's cutoff, in the topics they follow (tags or category; none =
everything), newest first, capped at `[digests] max_articles` (the rest: "and N
more"). A selection is cached by what decides it, so a large list costs one selection
per distinct (topics, newer-than-watermark count, first digest) and one render per
distinct result (a "variant")."""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable

from pipeline.content.editorial import ApprovedArticle


@dataclasses.dataclass(frozen=True)
class Selection:
    article_ids: tuple[int, ...]
    more_count: int

    @property
    def variant(self) -> str:
        raw = json.dumps([list(self.article_ids), self.more_count])
        return hashlib.sha256(raw.encode("ascii")).hexdigest()


class Selector:
    """Selections for many subscribers over one candidate list, cached by what decides
    them: the topic set, how many candidates are newer than the watermark, first digest."""

    def __init__(self, candidates: list[ApprovedArticle], *, cap: int, welcome: int):
        self.candidates = candidates  # newest first (publication date)
        self.by_id = {a.article_id: a for a in candidates}
        self.approved_sorted = sorted(a.approved_at for a in candidates)
        self.keys = [frozenset(a.tags) | ({a.category} if a.category else frozenset()) for a in candidates]
        self.cap = max(1, cap)
        self.welcome = max(0, welcome)
        self._cache: dict = {}

    def select(self, topics: Iterable[str] | None, watermark: dt.datetime, *, first: bool = False) -> Selection:
        wanted = frozenset(topics or ())
        newer = len(self.approved_sorted) - bisect.bisect_right(self.approved_sorted, watermark)
        welcome = self.welcome if first else 0
        key = (wanted, newer, welcome)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._select(wanted, watermark, welcome)
        return hit

    def _select(self, wanted: frozenset, watermark: dt.datetime, welcome: int) -> Selection:
        chosen = []
        old = 0
        for a, keys in zip(self.candidates, self.keys):
            if wanted and not (wanted & keys):
                continue
            if a.approved_at > watermark:
                chosen.append(a.article_id)
            elif old < welcome:
                chosen.append(a.article_id)
                old += 1
        return Selection(tuple(chosen[: self.cap]), max(0, len(chosen) - self.cap))
