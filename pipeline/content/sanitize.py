"""Untrusted text and HTML -> what every output may carry.

One module for the three ways author input is made safe, so every reader, feed, page
and email gets them the same way:

- `sanitize_html`: untrusted HTML -> the feed-safe subset (SAN-1..3, VAL-3), every URL
  absolute (ATOM-8), only http(s)/mailto links (SAN-3); relative image sources can be
  resolved to files by the caller (`resolve_src`).
- `html_to_text`: the plain text of HTML, derived once with a real parser (lxml), with
  every character kept: `&`, a lone `<`, `]]>` and emoji survive, entities are decoded
  exactly once, and block boundaries (`<td>vote</td><td>for</td>`) separate words.
  Plain text is escaped again by whoever outputs it (Jinja2 autoescape, lxml, or
  `html.escape` for RSS `<description>`, which readers treat as HTML).
- `clean_text` / `strip_control_chars`: characters XML 1.0 forbids (FG-8) and the
  bidirectional overrides and isolates (U+202A-202E, U+2066-2069) that make
  `click gnp.exe` read as `click exe.png`, removed from titles, names, link texts,
  summaries and bodies alike.
- `http_url`: the one scheme allow-list (http, https) for URL fields an author
  writes (canonical_url, image, an author's url), checked at ingest and again
  before a feed is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import lxml.etree
import lxml.html
import nh3

SANITIZER_VERSION = f"nh3-{nh3.__version__ if hasattr(nh3, '__version__') else '0'}-feed-2"

# C0 controls that XML 1.0 forbids (FG-8; \t \n \r stay), the two non-characters, and the
# bidirectional embeddings/overrides (U+202A-202E) and isolates (U+2066-2069).
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff" + BIDI_CONTROLS + "]")
# HTML's whitespace (not Unicode's: a no-break space is text and is kept).
HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
# The runs of it that collapsing to one space changes (a lone space already is one):
# `HTML_SPACE_RUN.sub(" ", s) == HTML_SPACE.sub(" ", s)`, with half the matches to make.
HTML_SPACE_RUN = re.compile(r"[\t\n\r\f][ \t\n\r\f]*| [ \t\n\r\f]+")
# CONTROL_CHARS' ASCII part, for str.translate (several times faster on ASCII text).
_ASCII_CONTROLS = dict.fromkeys([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])

# A subset of the W3C feed validator's acceptable_elements (VAL-3): no script, style,
# iframe, object, embed, form, input, meta, link, base.
FEED_TAGS = {
    "a",
    "abbr",
    "acronym",
    "b",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "col",
    "colgroup",
    "dd",
    "del",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "samp",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "tt",
    "u",
    "ul",
    "var",
}
FEED_ATTRIBUTES = {
    "a": {"href", "title", "hreflang"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"},
    "acronym": {"title"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "del": {"cite", "datetime"},
    "ins": {"cite", "datetime"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "ol": {"start", "reversed"},
    "li": {"value"},
    "code": {"class"},
    "pre": {"class"},
}
CLEAN_CONTENT_TAGS = {
    "script",
    "style",
    "iframe",
    "object",
    "embed",
    "noscript",
    "template",
    "svg",
    "math",
    "frame",
    "frameset",
    "applet",
    "title",
    "textarea",
    "select",
    "xmp",
}
URL_ATTRIBUTES = {"href", "src", "cite"}
# An absolute http(s) URL that urljoin() returns unchanged whatever the base: lower-case
# scheme, a plain host name, no `;` (urlparse's path parameters), no empty `?` or `#`
# (urlunparse drops them), nothing urlsplit strips or rejects (spaces, controls, `[`).
# tests/test_content_reference.py holds the shortcut to urljoin with Hypothesis.
PLAIN_HTTP_URL = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9._~%!$&'()*+,=:@/-]*)?"
    r"(?:\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]+)?"
    r"(?:#[A-Za-z0-9._~%!$&'()*+,;=:@/?-]+)?"
)
# A root-relative path urljoin() resolves by putting the base's scheme and host before it
# (when it has no `/.` either: no dot segments), under the same restrictions.
PLAIN_ROOT_PATH = re.compile(
    r"/(?!/)[A-Za-z0-9._~%!$&'()*+,=:@/-]*"
    r"(?:\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]+)?"
    r"(?:#[A-Za-z0-9._~%!$&'()*+,;=:@/?-]+)?"
)
SAFE_SCHEMES = {"http", "https", "mailto"}
# URL fields an author writes (canonical_url, image, author url): the same list everywhere.
HTTP_SCHEMES = ("http", "https")

# Elements whose boundaries separate words in the plain text: a reader sees
# `<td>vote</td><td>for</td>` as two words, and so must the policy check.
BLOCK_TAGS = {
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
    "body",
    "html",
    "option",
    "legend",
}
# Elements whose content is not text a reader sees.
INVISIBLE_TAGS = {
    "script",
    "style",
    "template",
    "noscript",
    "head",
    "title",
    "textarea",
    "select",
    "iframe",
    "object",
    "svg",
    "math",
}
WORDS_PER_MINUTE = 230
SUMMARY_CHARS = 280


def strip_control_chars(text: str) -> str:
    """Remove what XML 1.0 forbids (FG-8) and the bidi overrides/isolates."""
    if text.isascii():  # the non-ASCII ones cannot be there
        return text.translate(_ASCII_CONTROLS)
    return CONTROL_CHARS.sub("", text)


def collapse_space(text: str) -> str:
    """Every run of HTML whitespace as one space (`HTML_SPACE.sub(" ", text)`)."""
    return HTML_SPACE_RUN.sub(" ", text)


def clean_text(value) -> str:
    """A one-line plain-text field (title, name, alt text): controls and bidi overrides
    removed, HTML whitespace collapsed, every other character kept (a no-break space too)."""
    text = value if value.__class__ is str else str(value or "")
    # Most titles and names are already clean: printable (no control, bidi or HTML
    # whitespace character other than the space), no run of spaces, no space at either
    # end. Such text is returned as it is, without two regex passes (ING-3: the test
    # suite holds this equal to the straightforward version).
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return collapse_space(strip_control_chars(text)).strip(" ")


def http_url(value) -> str | None:
    """`value` as an absolute http(s) URL with a host, or None when it is anything else
    (javascript:, data:, a relative path, a control character smuggled into the scheme)."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or CONTROL_CHARS.search(url) or any(c in url for c in "\t\n\r "):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in HTTP_SCHEMES or not parts.hostname:
        return None
    return url


def sanitize_html(fragment: str, base_url: str, *, resolve_src: Callable[[str], str | None] | None = None) -> str:
    """Untrusted HTML -> the feed-safe subset, URLs absolute. Idempotent (SAN-1).

    `resolve_src(value)` is asked first about every relative `<img src>`: it returns the
    absolute URL of the local file, or None to resolve against `base_url` as usual.
    """

    base = urlsplit(base_url)
    # What urljoin() puts before a plain root-relative path ("/articles/x/") of this base.
    site_root = f"{base.scheme}://{base.netloc}" if base.scheme in HTTP_SCHEMES and base.netloc else None

    def keep_attribute(tag: str, attr: str, value: str) -> str | None:
        if attr not in URL_ATTRIBUTES:
            return value
        value = value.strip()
        if not value:
            return None
        if PLAIN_HTTP_URL.fullmatch(value):  # already absolute http(s): urljoin gives it back
            return value
        if (
            resolve_src is not None
            and tag == "img"
            and attr == "src"
            and not urlsplit(value).scheme
            and not value.startswith("//")
        ):
            resolved = resolve_src(value)
            if resolved:
                return resolved
        if site_root is not None and "/." not in value and PLAIN_ROOT_PATH.fullmatch(value):
            return site_root + value  # what urljoin gives: no dot segment to resolve
        absolute = urljoin(base_url, value)
        scheme = urlsplit(absolute).scheme.lower()
        if scheme not in SAFE_SCHEMES:
            return None
        if tag == "img" and scheme == "mailto":
            return None
        return absolute

    # Stripped before and after: the parser decodes `&#8238;` or `&#11;` into the very
    # characters stripped from the raw text.
    return strip_control_chars(
        nh3.clean(
            strip_control_chars(fragment),
            tags=FEED_TAGS,
            clean_content_tags=CLEAN_CONTENT_TAGS,
            attributes=FEED_ATTRIBUTES,
            attribute_filter=keep_attribute,
            url_schemes=SAFE_SCHEMES,
            strip_comments=True,
            link_rel="noopener noreferrer",
        )
    )


def parse_fragment(fragment: str):
    """An HTML fragment as an lxml element (the `body` around it), or None when it is empty.
    The parser is libxml2's HTML parser: it reads `a < b`, `&` and `]]>` as text the way a
    browser does, and decodes each entity once. The elements are plain `lxml.etree` ones
    (the same tree `lxml.html` builds, without its per-element class lookup in Python)."""
    fragment = strip_control_chars(fragment or "")
    if not fragment.strip(" \t\n\r\f"):  # HTML_SPACE only: a lone no-break space is text
        return None
    try:
        # Wrapped here, not with lxml.html.fragment_fromstring, which drops leading text
        # that Python calls whitespace (a no-break space). huge_tree: libxml2 otherwise
        # drops what is nested deeper than 256 levels.
        doc = lxml.etree.fromstring(
            f"<html><body>{fragment}</body></html>", parser=lxml.etree.HTMLParser(huge_tree=True)
        )
    except (lxml.etree.ParserError, ValueError):
        return None
    return None if doc is None else doc.find("body")


def nesting_depth(root) -> int:
    """How deep elements nest under `root` (an lxml element); 0 for None."""
    if root is None:
        return 0
    return _walk(root)[1]


def element_text(root) -> str:
    """The visible text under `root`, one line per block element. Iterative (a hostile
    fragment may nest thousands deep) and comment-aware (a comment's tail is text)."""
    return _walk(root)[0]


def text_and_depth(root) -> tuple[str, int]:
    """`element_text(root)` and `nesting_depth(root)` from one walk over the tree."""
    if root is None:
        return "", 0
    return _walk(root)


# A block boundary in the text being collected. U+0000 never occurs in the text itself:
# parse_fragment strips it from the input and libxml2 reads `&#0;` as U+FFFD (a C string
# cannot hold it), so splitting on it gives back exactly the lines.
_BREAK = "\x00"
_ASCII_CONTROLS_BUT_BREAK = {c: None for c in _ASCII_CONTROLS if c != 0}
CONTROL_CHARS_BUT_BREAK = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff" + BIDI_CONTROLS + "]")


def _walk(root) -> tuple[str, int]:
    """(plain text, nesting depth) of `root`: one iterative pass over the elements, then
    one regex pass over the whole text instead of two per line."""
    parts: list[str] = []
    append = parts.append
    deepest = 0
    block, invisible = BLOCK_TAGS, INVISIBLE_TAGS
    # (element, depth): depth > 0 enters the element, depth < 0 leaves it.
    stack: list[tuple[object, int]] = [(root, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        el, depth = pop()
        tag = el.tag  # type: ignore[attr-defined]
        if depth < 0:  # leaving: the element's end is a boundary, its tail follows it
            if tag in block:
                append(_BREAK)
            if el is not root:
                tail = el.tail  # type: ignore[attr-defined]
                if tail:
                    append(tail)
            continue
        if depth > deepest:
            deepest = depth
        if tag.__class__ is not str or tag in invisible:  # a comment or PI; or hidden content
            push((el, -depth))
            if len(el):  # type: ignore[arg-type]
                deepest = max(deepest, depth - 1 + _depth_only(el))
            continue
        push((el, -depth))
        if tag in block:
            append(_BREAK)
        text = el.text  # type: ignore[attr-defined]
        if text:
            append(text)
        if len(el):  # type: ignore[arg-type]
            child_depth = depth + 1
            for child in reversed(el):  # type: ignore[call-overload]
                push((child, child_depth))
    append(_BREAK)
    whole = "".join(parts)
    # Entities are decoded by now (`&#8238;` is U+202E again): strip once more. Removing
    # characters and collapsing runs of spaces never crosses a _BREAK, so one pass over the
    # whole text is the same as one per line.
    if whole.isascii():
        whole = whole.translate(_ASCII_CONTROLS_BUT_BREAK)
    else:
        whole = CONTROL_CHARS_BUT_BREAK.sub("", whole)
    whole = collapse_space(whole)
    return "\n".join(line for line in (piece.strip(" ") for piece in whole.split(_BREAK)) if line), deepest


def _depth_only(root) -> int:
    deepest, stack = 0, [(root, 1)]
    while stack:
        el, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in el)
    return deepest


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment (summaries, word counts, policy checks): one line
    per block, HTML whitespace collapsed, nothing else lost."""
    root = parse_fragment(fragment)
    return "" if root is None else element_text(root)


def one_line(text: str) -> str:
    return " ".join(line for line in text.split("\n") if line)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + "…"


def derive_summary(body_html: str, limit: int = SUMMARY_CHARS) -> str:
    """The first paragraph with text, as plain text cut at a word boundary."""
    return summary_of(parse_fragment(body_html), limit)


def summary_of(root, limit: int = SUMMARY_CHARS) -> str:
    """`derive_summary` of an already parsed body (`parse_fragment`)."""
    if root is None:
        return ""
    for para in root.iter("p"):
        text = one_line(element_text(para))
        if text:
            return _cut(text, limit)
    return _cut(one_line(element_text(root)), limit)


def summary_text(value: str, limit: int | None = None) -> str:
    """A summary the author wrote: markup removed, entities decoded once, one line."""
    text = one_line(html_to_text(value))
    return _cut(text, limit) if limit else text


__all__ = [
    "SANITIZER_VERSION",
    "FEED_TAGS",
    "FEED_ATTRIBUTES",
    "SAFE_SCHEMES",
    "HTTP_SCHEMES",
    "CONTROL_CHARS",
    "strip_control_chars",
    "clean_text",
    "http_url",
    "sanitize_html",
    "parse_fragment",
    "html_to_text",
    "derive_summary",
    "summary_text",
]
