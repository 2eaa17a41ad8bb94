"""The one Jinja2 factory: pages, emails and the web service all get their environments here.

Every environment loads from the operator's `paths.templates` folder first, then the
bundled `templates/`, and uses StrictUndefined, so a misspelt variable fails loudly
instead of rendering as nothing. HTML environments autoescape (TPL-1: Jinja2's default
is off); text environments (plain-text email parts, subject lines) do not, and their
output is never served as HTML. Whitespace handling differs per template family and
is part of each family's byte-stable output, so it is a parameter, not a second factory.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

BUNDLED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def template_dirs(settings: Any) -> list[Path]:
    """The operator's templates first, then the bundled ones (only folders that exist)."""
    dirs = [settings.path("paths.templates")]
    if BUNDLED_TEMPLATES not in dirs:
        dirs.append(BUNDLED_TEMPLATES)
    return [d for d in dirs if d.is_dir()]


@lru_cache(maxsize=32)
def _build(dirs: tuple[str, ...], html: bool, trim: bool, keep_trailing_newline: bool) -> jinja2.Environment:
    return new_environment(dirs, html, trim, keep_trailing_newline)


def new_environment(
    dirs: tuple[str, ...], html: bool, trim: bool, keep_trailing_newline: bool, *, auto_reload: bool = True
) -> jinja2.Environment:
    """A new environment (not cached). `auto_reload=False`: its templates, once loaded,
    are never checked for changes on disk (pipeline.site.pages.pinned)."""
    from pipeline.timeutil import rfc3339

    env = jinja2.Environment(
        auto_reload=auto_reload,
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(d) for d in dirs]),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True) if html else False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=trim,
        lstrip_blocks=trim,
        keep_trailing_newline=keep_trailing_newline,
    )
    env.filters["human_date"] = human_date
    env.filters["rfc3339"] = rfc3339
    return env


def environment(
    settings: Any, *, html: bool = True, trim: bool = False, keep_trailing_newline: bool = True
) -> jinja2.Environment:
    """The environment for `settings`' template folders; built once per combination."""
    dirs = tuple(str(d) for d in template_dirs(settings))
    return _build(dirs, html, trim, keep_trailing_newline)


MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def human_date(value: Any) -> str:
    """'5 December 2026': the same bytes in any locale (strftime's month names are not)."""
    from pipeline.timeutil import as_utc

    value = as_utc(value)
    return f"{value.day} {MONTHS[value.month - 1]} {value.year}"
