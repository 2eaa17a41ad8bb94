"""The fast Markdown renderer gives markdown-it-py's bytes wherever it is used (ING-2)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.content import markdown_html
from pipeline.content.sanitize import sanitize_html

REPO = Path(__file__).resolve().parent.parent

FRAGMENTS = [
    "# H1",
    "## H2 ##",
    "Setext\n===",
    "text\n---",
    "- a\n- b\n  - c\n    1. d",
    "1) x\n2) y",
    "> quote\n> > nested",
    "    code block",
    "```py\nx = '<a>'\n```",
    "~~~\nt\n~~~",
    "*em* **strong** ***both*** _u_ __uu__",
    "`co`de`` ``x``",
    '[link](http://a.example "title")',
    "[ref][r]\n\n[r]: http://r.example 'T'",
    "<http://auto.example>",
    "<mail@x.example>",
    '![img](a.png "t")',
    "&amp; &copy; &#35; &#x22; &nbsp; &bogus;",
    '<div class="x">\n*md*\n</div>',
    "<!-- comment -->",
    "<span>inline</span> and <b>bold</b>",
    "line  \nbreak",
    "line\\\nbreak",
    "***",
    "- [ ] task",
    "\\*escaped\\*",
    "<script>alert(1)</script>",
    "émoji 😀 ünïcode",
    "a_b_c foo*bar*",
    "*a **b** c*",
    "**a*",
    "[a](<b c>)",
    "1. a\n\n   b\n2. c",
    "\t- tab list",
    "<pre>\n  pre\n</pre>",
    "<?php x ?>",
    "<![CDATA[ x ]]>",
    "<table><tr><td>t</td></tr></table>",
    "a\r\nb",
    "[![i](s.png)](l)",
    "+ plus\n+ list",
    "2. start\n3. next",
    '<a href="javascript:x">j</a>',
    "x <img src=x onerror=y>",
    "| a | b |\n|---|:-:|\n| `\\|` | x |",
    "| no | table\n| - |",
]


def _mixes(n: int, seed: int = 15):
    rng = random.Random(seed)
    for i in range(n):
        sep = "\n\n" if i % 2 else "\n"
        yield sep.join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 6))) + "\n" * (i % 3 != 0)


def test_render_equals_markdown_it_py_on_random_mixes_ing2():
    """ING-2: over a few thousand mixes of CommonMark's constructs (tables, raw HTML,
    lists, quotes, code, entities, with and without a final newline) the HTML is
    markdown-it-py's, before and after sanitising."""
    fast = 0
    for text in _mixes(4000):
        fast += markdown_html.fast_renderer_applies(text)
        assert markdown_html.render(text) == markdown_html.render_reference(text), text
    assert fast > 1000  # the fast path is really taken


def test_render_equals_markdown_it_py_on_every_markdown_file_in_the_repository_ing2():
    """ING-2: the articles, docs and fixtures in the repository render the same."""
    paths = [p for p in REPO.rglob("*.md") if ".venv" not in p.parts and "node_modules" not in p.parts]
    assert paths
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert markdown_html.render(text) == markdown_html.render_reference(text), path


@pytest.mark.parametrize(
    "text",
    [
        "| a | b |\n|---|---|\n| 1 | 2 |\n- item\n",  # the Rust port carries the table on
        "Text\n\n<div>raw</div>",  # an HTML block at the end, no final newline
    ],
)
def test_where_the_renderers_differ_the_reference_renders_ing2(text):
    """ING-2: the two known differences are routed to markdown-it-py."""
    assert not markdown_html.fast_renderer_applies(text)
    assert markdown_html.render(text) == markdown_html.render_reference(text)
    assert sanitize_html(markdown_html.render(text), "https://example.com/a/")
