"""Helpers that write article and author files into a test project."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

BODY = """
Small rituals keep people close. A shared cup of tea, a walk after dinner,
a message at lunch: none of them is grand, and all of them add up.

## Why they work

Rituals are *predictable*. They give a relationship a rhythm. See
[our guide](/articles/other-piece/) and [an outside study](https://example.org/study).

- They take little time.
- They signal care.
"""


def write_author(root: Path, slug: str = "ana-lee", name: str = "Ana Lee") -> Path:
    path = root / "content" / "authors" / f"{slug}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\nname: {name}\nurl: https://example.org/{slug}\n---\n{name} writes about habits.\n")
    return path


def write_article(
    root: Path,
    slug: str,
    *,
    title: str = "Small Rituals",
    author: str = "ana-lee",
    date: str = "2026-10-01T08:00:00Z",
    tags: str = "[relationships, habits]",
    category: str = "relationships",
    body: str = BODY,
    extra: str = "",
    status: str = "submitted",
    raw: bytes | None = None,
) -> Path:
    path = root / "content" / "articles" / f"{slug}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
        return path
    front = (
        textwrap.dedent(f"""\
        ---
        title: {json.dumps(title)}
        author: {author}
        date: {date}
        tags: {tags}
        category: {category}
        status: {status}
        """)
        + extra
        + "---\n"
    )
    path.write_text(front + body, encoding="utf-8")
    return path


def site_root(app) -> Path:
    return app.settings.root
