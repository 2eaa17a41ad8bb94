"""Markdown -> HTML for article bodies: CommonMark, raw HTML allowed, GFM tables (ING-2).

The reference renderer is `markdown-it-py` (DESIGN: "Markdown + front matter"). It is
about 60% of the time ingest takes, so a body is rendered by `markdown-it-pyrs` (the
Rust port of the same markdown-it, about 12x faster) wherever the two give the same
bytes: a body that ends with a newline and has no `|`. Compared over the bench corpus,
every Markdown file in the repository and 40,000 random mixes of CommonMark's
constructs, they differed only there: a GFM table followed by a block without a
blank line (the Rust port carries the table on), and a raw HTML block at the very end
of a body without a final newline (it adds one). Those bodies, and every body when the
Rust wheel is not installed, go through markdown-it-py. `tests/test_markdown_html.py`
holds the two to the same output, so the stored HTML never depends on which ran.
"""

from __future__ import annotations

import functools


@functools.cache
def _reference():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False}).enable("table")


@functools.cache
def _fast():
    try:
        import markdown_it_pyrs
    except ImportError:  # pragma: no cover - a platform without the wheel
        return None
    return markdown_it_pyrs.MarkdownIt("commonmark").enable("table")  # commonmark: raw HTML on, no linkify


def fast_renderer_applies(text: str) -> bool:
    """True when the Rust renderer's output is known to equal markdown-it-py's."""
    return text.endswith("\n") and "|" not in text and _fast() is not None


def render_reference(text: str) -> str:
    """markdown-it-py's HTML: what every body's HTML must equal."""
    return str(_reference().render(text))


def render(text: str) -> str:
    """A Markdown body -> (unsanitised) HTML."""
    if fast_renderer_applies(text):
        return str(_fast().render(text))
    return render_reference(text)


class _Renderer:
    """`render(text)` as a method, for code that held the MarkdownIt instance."""

    render = staticmethod(render)


renderer = _Renderer()

__all__ = ["render", "render_reference", "fast_renderer_applies", "renderer"]
