"""The application object every stage receives: settings plus a lazily opened database."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.engine import Engine

from pipeline.config import Settings
from pipeline.store import get_engine


class App:
    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        if engine is not None:
            self.__dict__["engine"] = engine

    @cached_property
    def engine(self) -> Engine:
        return get_engine(self.settings.database_url)
