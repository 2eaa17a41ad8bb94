"""Sources: where articles come from (a Markdown folder, a feed, a WordPress site).

A source is chosen by its `type` in `[[sources]]` (SOURCE_TYPES maps the short name to
the class; an unknown name fails at start-up). Its contract is one method:
`fetch(cursor) -> Fetched`: the items it has now, the cursor to start from next time
(ETag, Last-Modified, a watermark), and what went wrong with single items. A source
never writes the database: `pipeline.content.sources.runner` stores the items through
`pipeline.content.ingest.store_source_items` (the same hash pinning, policy flags and
retraction as the Markdown path) and saves the cursor only after that commit.
"""

from __future__ import annotations

from pipeline.content.sources.base import Fetched, ItemProblem, Source, SourceError, SourceItem

__all__ = [
    "DEFAULT_SOURCES",
    "Fetched",
    "ItemProblem",
    "Source",
    "SourceError",
    "SourceItem",
    "configured",
    "find",
    "make_source",
    "source_types",
]


def source_types() -> dict[str, type[Source]]:
    from pipeline.content.sources.feed import FeedSource
    from pipeline.content.sources.markdown import MarkdownSource
    from pipeline.content.sources.wordpress import WordPressSource

    return {cls.type: cls for cls in (MarkdownSource, FeedSource, WordPressSource)}


DEFAULT_SOURCES = [{"name": "content", "type": "markdown", "path": "", "approval": "review", "enabled": True}]


def configured(settings) -> list[dict]:
    """The [[sources]] entries, or the default: the content/ folder as a Markdown source."""
    return list(getattr(settings, "sources", None) or DEFAULT_SOURCES)


def make_source(config: dict, settings) -> Source:
    types = source_types()
    try:
        cls = types[config["type"]]
    except KeyError:
        from pipeline.errors import ConfigError

        raise ConfigError(
            f"source {config['name']!r}: unknown type {config['type']!r}", hint=f"Use one of: {', '.join(types)}."
        ) from None
    return cls(config, settings)


def find(settings, name: str) -> dict:
    for config in configured(settings):
        if config["name"] == name:
            return config
    from pipeline.errors import NotFound

    raise NotFound(
        f"no source named {name!r}",
        hint=f"Configured: {', '.join(c['name'] for c in configured(settings))}; see [[sources]] in syndicate.toml.",
    )
