"""`type = "markdown"`: a folder of Markdown files with YAML front matter (today's
content/ folder; the default when no [[sources]] are configured).

Its reading, hash pinning and retraction of deleted files live in
pipeline.content.ingest (`ingest`); this class only points it at the folder.
"""

from __future__ import annotations

import copy

from pipeline.config import Section
from pipeline.content.sources.base import Fetched, Source


class MarkdownSource(Source):
    type = "markdown"
    stores_itself = True  # the runner calls ingest() instead of fetch()

    def fetch(self, cursor: dict) -> Fetched:  # pragma: no cover - never called, see stores_itself
        raise NotImplementedError("the Markdown source is stored by pipeline.content.ingest.ingest")

    def folder_settings(self):
        """The settings with paths.content pointing at this source's folder."""
        if not self.config.get("path"):
            return self.settings
        settings = copy.copy(self.settings)
        values = copy.deepcopy(settings._values)
        values["paths"]["content"] = self.config["path"]
        settings._values = values
        settings.paths = Section("paths", values["paths"])
        return settings

    def describe(self) -> str:
        return str(self.folder_settings().path("paths.content"))
