"""The fast text derivations give exactly what the straightforward ones give (ING-3).

Ingest derives from every body its plain text (word count, reading time, the policy
check's body field), its nesting depth and its summary, and the policy check folds every
field into words. Those functions were rewritten for speed (one tree walk for text and
depth, one regex pass per text instead of two per line, ASCII fast paths). The
straightforward versions they replaced are kept here, verbatim, as the reference, and
Hypothesis holds the two equal on hostile HTML and text: nesting, comments, hidden
elements, entities that decode into control characters, every kind of whitespace,
format characters, full-width letters.
"""

from __future__ import annotations

import re
import unicodedata

import lxml.etree
import lxml.html
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.content import policy, sanitize
from pipeline.content.ingest import read_article
from pipeline.content.sanitize import BLOCK_TAGS, CONTROL_CHARS, HTML_SPACE, INVISIBLE_TAGS, SUMMARY_CHARS, one_line

from .articles import write_article

# --- the reference: the implementations before the rewrite, unchanged -------------------


def ref_strip_control_chars(text: str) -> str:
    return CONTROL_CHARS.sub("", text)


def ref_clean_text(value) -> str:
    return HTML_SPACE.sub(" ", ref_strip_control_chars(str(value or ""))).strip(" ")


def ref_parse_fragment(fragment: str):
    fragment = ref_strip_control_chars(fragment or "")
    if not fragment.strip(" \t\n\r\f"):
        return None
    try:
        doc = lxml.html.document_fromstring(
            f"<html><body>{fragment}</body></html>", parser=lxml.html.HTMLParser(huge_tree=True)
        )
    except (lxml.etree.ParserError, ValueError):
        return None
    return doc.find("body")


def ref_nesting_depth(root) -> int:
    if root is None:
        return 0
    deepest, stack = 0, [(root, 1)]
    while stack:
        el, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in el)
    return deepest


def ref_element_text(root) -> str:
    parts: list[str | None] = []

    def add(text: str | None) -> None:
        if text:
            parts.append(text)

    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        el, entered = stack.pop()
        tag = el.tag if isinstance(el.tag, str) else None  # type: ignore[attr-defined]
        if entered:
            if tag in BLOCK_TAGS:
                parts.append(None)
            if el is not root:
                add(el.tail)  # type: ignore[attr-defined]
            continue
        stack.append((el, True))
        if tag is None or tag in INVISIBLE_TAGS:
            continue
        if tag in BLOCK_TAGS:
            parts.append(None)
        add(el.text)  # type: ignore[attr-defined]
        stack.extend((child, False) for child in reversed(el))  # type: ignore[call-overload]
    lines: list[str] = []
    start = 0
    parts.append(None)
    for i, part in enumerate(parts):
        if part is None:
            if i > start:
                text = "".join(parts[start:i])  # type: ignore[arg-type]
                line = HTML_SPACE.sub(" ", ref_strip_control_chars(text)).strip(" ")
                if line:
                    lines.append(line)
            start = i + 1
    return "\n".join(lines)


def ref_html_to_text(fragment: str) -> str:
    root = ref_parse_fragment(fragment)
    return "" if root is None else ref_element_text(root)


def ref_cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:.") + "…"


def ref_summary_of(root, limit: int = SUMMARY_CHARS) -> str:
    if root is None:
        return ""
    for para in root.iter("p"):
        text = one_line(ref_element_text(para))
        if text:
            return ref_cut(text, limit)
    return ref_cut(one_line(ref_element_text(root)), limit)


def ref_text_fields(text: str) -> tuple[str, str]:
    """policy.Text's (text, joined) as first written."""
    folded = unicodedata.normalize("NFKC", policy.FORMAT_CHARS.sub("", text))
    return folded, " ".join(policy.WORD.findall(folded)).casefold()


# --- hostile input --------------------------------------------------------------------

# Characters chosen to hit every branch: ASCII words and punctuation, each kind of HTML
# whitespace and a no-break space, C0 controls and DEL, bidi controls, format characters
# (soft hyphen, zero-width space, BOM), full-width and accented letters, a ligature, the
# two non-characters, and markup-looking text.
PIECES = [
    "vote",
    "for",
    "Politics",
    "word_2",
    "x",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\f",
    "\u00a0",
    "\x01",
    "\x0b",
    "\x1f",
    "\x7f",
    "\u202e",
    "\u2066",
    "\u00ad",
    "\u200b",
    "\ufeff",
    "ｖｏｔｅ",
    "é",
    "ﬁ",
    "\ufffe",
    "&amp;",
    "&lt;",
    "&#8238;",
    "&#11;",
    "&#0;",
    "&#x202E;",
    "&nbsp;",
    "&bogus;",
    "]]>",
    " < ",
    ",",
    ".",
    "-",
    "…",
]
TAGS = sorted(BLOCK_TAGS | INVISIBLE_TAGS) + ["b", "em", "a", "span", "code", "img", "unknown-tag"]

text_piece = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)


@st.composite
def fragments(draw, depth: int = 0) -> str:
    out = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["text", "element", "comment", "pi", "close"] if depth < 6 else ["text"]))
        if kind == "text":
            out.append(draw(text_piece))
        elif kind == "comment":
            out.append(f"<!--{draw(text_piece).replace('-', '')}-->")
        elif kind == "pi":
            out.append("<?php x ?>")
        elif kind == "close":  # a stray end tag: the parser's recovery is part of the input
            out.append(f"</{draw(st.sampled_from(TAGS))}>")
        else:
            tag = draw(st.sampled_from(TAGS))
            out.append(f"<{tag}>{draw(fragments(depth + 1))}</{tag}>")
    return "".join(out)


hostile_html = st.one_of(
    fragments(), st.text(), st.lists(st.sampled_from(PIECES + ["<p>", "</p>", "<br>"])).map("".join)
)


def deep(n: int, inner: str = "deep text") -> str:
    return "<div>" * n + inner + "</div>" * n


EXAMPLES = [
    "",
    "  \n ",
    "\u00a0",
    "<p>a</p>tail<!-- hidden -->end",
    "<table><tr><td>vote</td><td>for</td></tr></table>",
    "<p><b>vo</b>te <em>for</em></p><p>next</p>x<br>y",
    "<script>vote for</script><p>after</p><style>x</style>tail",
    "<svg><g><g><g>hidden</g></g></g></svg><p>shown</p>",
    "<p>&#8238;gnp.exe\x0b &#11;x&#0;y</p>",
    deep(3000),
    deep(70, "<!-- c --><script><b><i>x</i></b></script>t"),
    "<p></p><p>  </p><p>first <b>real</b>\n paragraph</p><p>second</p>",
    "<ul><li>one</li>\n<li>two</li></ul>no paragraph at all " + "word " * 80,
]


# --- the properties -----------------------------------------------------------------------


def check_text(fragment: str) -> None:
    assert sanitize.html_to_text(fragment) == ref_html_to_text(fragment)
    root, ref_root = sanitize.parse_fragment(fragment), ref_parse_fragment(fragment)
    assert (root is None) == (ref_root is None)
    expected = ("", 0) if ref_root is None else (ref_element_text(ref_root), ref_nesting_depth(ref_root))
    assert sanitize.text_and_depth(root) == expected
    assert sanitize.nesting_depth(root) == expected[1]
    assert sanitize.derive_summary(fragment) == ref_summary_of(ref_root)
    assert sanitize.derive_summary(fragment, 20) == ref_summary_of(ref_root, 20)


@pytest.mark.parametrize("fragment", EXAMPLES, ids=range(len(EXAMPLES)))
def test_ING3_text_depth_and_summary_equal_the_reference_on_examples(fragment):
    check_text(fragment)


@settings(max_examples=400, deadline=None)
@given(hostile_html)
def test_ING3_property_text_depth_and_summary_equal_the_reference(fragment):
    check_text(fragment)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), text_piece, st.text(alphabet=st.characters(max_codepoint=127))))
def test_ING3_property_control_chars_and_whitespace_equal_the_reference(text):
    assert sanitize.strip_control_chars(text) == ref_strip_control_chars(text)
    assert sanitize.clean_text(text) == ref_clean_text(text)
    assert sanitize.collapse_space(text) == HTML_SPACE.sub(" ", text)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), text_piece, st.text(alphabet=st.characters(max_codepoint=127))))
def test_ING3_property_policy_words_equal_the_reference(text):
    field = policy.Text(text)
    assert (field.text, field.joined) == ref_text_fields(text)


def test_ING3_every_character_clean_text_changes_is_not_printable():
    """clean_text returns printable text without double or edge spaces as it is: that
    is exact only if every character it removes or collapses is not printable (or is
    the space)."""
    for cp in range(0x110000):
        ch = chr(cp)
        if sanitize.CONTROL_CHARS.match(ch) or (sanitize.HTML_SPACE.match(ch) and ch != " "):
            assert not ch.isprintable(), hex(cp)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(), text_piece, st.text(alphabet=" a\t\u00a0\u202e\x7f", max_size=8)))
def test_ING3_property_clean_text_fast_path_equals_the_reference(text):
    assert sanitize.clean_text(text) == ref_clean_text(text)


def ref_may_start(words: list[str], word: str, prefix: bool) -> bool:
    """policy.Text.may_start as first written: over the sorted vocabulary alone."""
    return any(w.startswith(word) if prefix else w == word for w in words)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.text(), text_piece, st.text(alphabet="ab vote rs-", max_size=40)),
    st.text(alphabet="abvoters", min_size=1, max_size=5),
    st.booleans(),
)
def test_ING3_property_the_substring_check_before_the_vocabulary_gives_the_same_answer(text, word, prefix):
    field = policy.Text(text)
    word = policy._fold(word)[0] if policy._fold(word) else word
    assert field.may_start(word, prefix) == ref_may_start(field.words, word, prefix)


def test_ING3_the_ascii_word_table_is_the_regex_word_class():
    for b in range(128):
        ch = chr(b)
        expected = ch.casefold() if re.fullmatch(r"\w", ch) else " "
        assert chr(policy._ASCII_WORD_BYTES[b]) == expected


@pytest.fixture
def root(tmp_path, make_app, sqlite_url):
    app = make_app(sqlite_url)
    return app


BODIES = [
    "Hello\x0b world\x1b.\n\n<script>alert(1)</script>\n\n| a | b |\n|---|---|\n| vote | for |\n",
    "<div><p>&#8238;gnp.exe</p></div>\n\n- one\n- two\n\n> quoted *politics*\n\n```\ncode\tblock\n```\n",
    "No paragraph wrapper: <span>inline</span> text without a final newline",
    "## Heading\n\nＦｕｌｌ-width ｖｏｔｅ and soft\u00adhyphen and zero\u200bwidth.\n\n" + "Many words here. " * 100,
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_ING3_read_article_derives_text_words_and_summary_as_the_reference(root, body):
    """The stored fields that come from the body (word_count, reading_minutes, summary,
    body_text) equal the reference derivation from the article's own body_html."""
    path = write_article(root.settings.root, "ref-article", body=body)
    a = read_article(path, root.settings, {"ana-lee"})
    ref_root = ref_parse_fragment(a.body_html)
    plain = "" if ref_root is None else ref_element_text(ref_root)
    words = len(plain.split())
    assert a.body_text == plain
    assert (a.word_count, a.reading_minutes) == (words, max(1, round(words / sanitize.WORDS_PER_MINUTE)))
    assert a.summary == ref_summary_of(ref_root)
    assert sanitize.strip_control_chars(a.body_html) == a.body_html


URL_CHARS = st.sampled_from(list("aZ09.-_~%!$&'()*+,;=:@/?#[] \t") + ["https://", "http://", "..", "/./", "?", "#"])


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.from_regex(sanitize.PLAIN_HTTP_URL, fullmatch=True),
        st.lists(URL_CHARS, max_size=12).map("".join),
        st.builds(
            lambda scheme, host, rest: f"{scheme}://{host}{rest}",
            st.sampled_from(["http", "https", "HTTP", "ftp"]),
            st.sampled_from(["example.org", "a-b.example", "x:8080", "[::1]", "", "user@h"]),
            st.lists(URL_CHARS, max_size=10).map("".join),
        ),
    ),
    st.sampled_from(["https://news.example.com/articles/x/", "http://news.example.com/a/b", "https://o.example"]),
)
def test_ING3_property_the_absolute_url_shortcut_is_what_urljoin_gives(value, base):
    """sanitize_html returns a plain absolute http(s) URL as it is, without urljoin():
    only where urljoin(base, value) would give the same string."""
    from urllib.parse import urljoin

    if sanitize.PLAIN_HTTP_URL.fullmatch(value):
        assert urljoin(base, value) == value


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/a/../b?q=1#f",
        "https://example.org/path;params?x",
        "https://example.org/a?",
        "http://example.org:80/x#",
        "HTTPS://Example.org/",
        "https://example.org/ok/page?q=a+b&c=%20#top",
        "https://[::1]/x",
        "//example.org/protocol-relative",
        "/root-relative",
    ],
)
def test_ING3_sanitize_html_keeps_urls_as_the_reference_does(url):
    """sanitize_html's output equals a run without the absolute-URL shortcut."""
    from unittest import mock

    html = f'<p><a href="{url}">a</a> <img src="{url}" alt=""> <q cite="{url}">q</q></p>'
    base = "https://news.example.com/articles/x/"
    fast = sanitize.sanitize_html(html, base)
    with mock.patch.object(sanitize, "PLAIN_HTTP_URL", re.compile(r"(?!)")):
        assert sanitize.sanitize_html(html, base) == fast


BASES = st.sampled_from(
    [
        "https://news.example.com/articles/x/",
        "http://news.example.com:8080/a/b?q=1#f",
        "HTTPS://News.Example.com/a;p",
        "https://user@o.example",
        "https://o.example/deep/er/",
    ]
)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.from_regex(sanitize.PLAIN_ROOT_PATH, fullmatch=True),
        st.lists(URL_CHARS, max_size=12).map(lambda parts: "/" + "".join(parts)),
    ),
    BASES,
)
def test_ING3_property_the_root_path_shortcut_is_what_urljoin_gives(value, base):
    """A plain root-relative path is made absolute without urljoin(): base scheme and
    host in front, only where urljoin(base, value) gives exactly that."""
    from urllib.parse import urljoin, urlsplit

    parts = urlsplit(base)
    if "/." not in value and sanitize.PLAIN_ROOT_PATH.fullmatch(value):
        assert urljoin(base, value) == f"{parts.scheme}://{parts.netloc}{value}"


@pytest.mark.parametrize(
    "url",
    [
        "/articles/a/",
        "/",
        "/a//b",
        "/a/./b",
        "/a/../b",
        "/.well-known/x",
        "/x;p",
        "/x?",
        "/x?q=1#frag",
        "/x#",
        "relative/path",
    ],
)
@pytest.mark.parametrize("base", ["https://news.example.com/articles/x/", "HTTP://Host.example:81/p?q#f"])
def test_ING3_sanitize_html_makes_root_paths_absolute_as_the_reference_does(url, base):
    from unittest import mock

    html = f'<p><a href="{url}">a</a> <img src="{url}" alt=""> <blockquote cite="{url}">q</blockquote></p>'
    fast = sanitize.sanitize_html(html, base)
    with mock.patch.object(sanitize, "PLAIN_ROOT_PATH", re.compile(r"(?!)")):
        assert sanitize.sanitize_html(html, base) == fast


def test_ING3_markdown_files_lists_what_globbing_lists_in_the_same_order(tmp_path):
    """Ingest lists the articles folder with one scandir and a sort of names; the
    reference is `sorted(folder.glob("*.md"))`: hidden files, folders named *.md and
    non-ASCII names included, other extensions and a wrong case excluded, and nothing
    for a folder that is missing or is a file."""
    from pipeline.content.ingest import markdown_files

    names = [
        "b.md",
        "a.md",
        "Z.md",
        ".hidden.md",
        "é-accent.md",
        "README.md",
        "x.MD",
        "x.markdown",
        "notes.txt",
        "a.md~",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "folder.md").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.md").write_text("x")
    assert markdown_files(tmp_path) == sorted(tmp_path.glob("*.md"))
    assert [p.name for p in markdown_files(tmp_path)][:3] == [".hidden.md", "README.md", "Z.md"]
    assert markdown_files(tmp_path / "missing") == [] and markdown_files(tmp_path / "b.md") == []
