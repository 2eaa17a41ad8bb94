"""What every source shares: the contract (`Source.fetch`), what it returns (`Fetched`,
`SourceItem`, `ItemProblem`) and how it fails (`SourceError`). The package
(pipeline.content.sources) re-exports these names; the source modules (feed, markdown,
wordpress, http, media) import them from here, so the package can load them without a
cycle."""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from typing import Any, ClassVar

from pipeline.config import Settings
from pipeline.errors import SyndicateError


class SourceError(SyndicateError):
    """A source could not be read at all (network, HTTP status, not a feed). `kind`
    names the failure for the report and the status screen."""

    def __init__(self, source: str, kind: str, message: str, hint: str | None = None, retry_after: float | None = None):
        self.source = source
        self.kind = kind
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503 Retry-After)
        super().__init__(f"source {source}: {kind}: {message}", hint)


@dataclasses.dataclass
class SourceItem:
    """One article as a source sees it, before it is pinned and stored. `key` is the
    item's stable identity within the source (guid, id, post id)."""

    key: str
    title: str
    body_html: str
    link: str = ""
    slug: str = ""
    summary: str = ""  # plain text or HTML; made plain text when stored
    published_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    author_name: str = ""
    author_email: str = ""
    author_uri: str = ""
    tags: list[str] = dataclasses.field(default_factory=list)
    category: str = ""
    image: str = ""
    image_alt: str = ""
    base_url: str = ""  # what relative URLs in body_html are resolved against
    status: str = "publish"  # publish | pending | retracted (trashed, private, draft upstream)


@dataclasses.dataclass
class ItemProblem:
    """A bad item: named, skipped, the batch goes on."""

    key: str
    message: str


@dataclasses.dataclass
class Fetched:
    items: list[SourceItem] = dataclasses.field(default_factory=list)
    cursor: dict[str, Any] = dataclasses.field(default_factory=dict)
    problems: list[ItemProblem] = dataclasses.field(default_factory=list)
    not_modified: bool = False  # a 304: nothing to store
    # Keys of every item the source holds now, when it can tell (a WordPress sweep, a
    # feed with retract_missing = true): stored items not in it are retracted. None:
    # unknown (a feed is a window; an item that leaves it is not withdrawn).
    present_keys: set[str] | None = None
    requests: int = 0
    # Set when the source failed part-way (a later page): the items before it are
    # stored, the cursor covers only them, and the failure is reported like any other.
    error: SourceError | None = None
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. "301 remembered: ..."


class Source(abc.ABC):
    """One configured source. Subclasses set `type` and implement `fetch`."""

    type: ClassVar[str]

    def __init__(self, config: dict[str, Any], settings: Settings):
        self.config = config
        self.settings = settings
        self.name: str = config["name"]

    @abc.abstractmethod
    def fetch(self, cursor: dict[str, Any]) -> Fetched:
        """Read the source from `cursor` on; raise SourceError when nothing could be read."""

    def describe(self) -> str:
        return self.config.get("url") or self.config.get("path") or ""
