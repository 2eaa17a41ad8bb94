"""Atom, RSS and JSON Feed documents: one feed document from a list of approved articles.

This module renders; `pipeline.site.build` decides which documents exist, which entries go
in each and which files changed. Atom and RSS go through feedgen (pinned at 1.0.0)
and are then corrected with lxml for the feedgen bugs listed in STANDARDS §0:

- FG-3 / finding 0.1 (#135): Atom entry links lose rel/type/length, so an enclosure
  becomes a second alternate link. We rewrite every entry's `<link>` elements.
- finding 0.2 / FG-7 (#122): RSS gets no `atom:link rel="hub"` and the channel
  `<link>` is whatever link was added last. We add the hub and RFC 5005 links
  (PAGE-4) and set the channel link to the HTML page (RSS-3); the RSS self link gets
  the RSS URL and type (RSS-8).
- finding 0.3 / SCHED-3: feedgen calls `locale.setlocale()` for every RSS date. We
  never give feedgen an RSS date: `pubDate` and `lastBuildDate` are written here with
  `email.utils.format_datetime`, which is locale-independent (RSS-6).
- finding 0.4: the syndication extension is never loaded (it writes `sy:UpdatePeriod`
  with a capital U); the polling hint is `<ttl>` in minutes, equal to max-age (HTTP-5).
- finding 0.5: content is `type="html"`, escaped by lxml, never `type="CDATA"` (ATOM-7).
- FG-6: every date comes from the content, generator/docs are set explicitly, so the
  same content gives the same bytes (HTTP-1).
- FG-8: control characters are removed from every text before it reaches lxml, and
  so are the bidi overrides and isolates (issue 18 item 5).
- RSS `<description>` is HTML to every reader (RSS 2.0: "entity-encoded HTML"), so
  the plain-text summary is HTML-escaped before lxml escapes it for XML: a summary
  `<script>` is text, never live markup (issue 19 item 6). Atom `<summary>` (type
  text) and JSON Feed `summary` are plain text and carry it as it is.
- An author's URL reaches `<uri>` / `authors[].url` only when it is http(s)
  (issue 18 item 4); ingest refuses others, this is the second check.
- FG-11: `summary()` for the summary, `content()` for the HTML, so Atom has both and
  RSS has `description` plus `content:encoded` (RSS-7).

JSON Feed 1.1 has no library here; it is written directly (JF-1..4).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import email.utils
import html
import json
import re
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import unescape as xml_unescape

from feedgen.entry import FeedEntry
from feedgen.feed import FeedGenerator
from lxml import etree

from pipeline.content.sanitize import http_url, strip_control_chars
from pipeline.timeutil import UTC, as_utc, rfc3339

FORMATS = ("atom", "rss", "json")
MEDIA_TYPES = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
    "json": "application/feed+json",
}
KINDS = ("all", "tags", "categories", "authors")
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
ATOM_NS = "http://www.w3.org/2005/Atom"
FH_NS = "http://purl.org/syndication/history/1.0"
DC_NS = "http://purl.org/dc/elements/1.1/"
CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
RSS_NSMAP = {"atom": ATOM_NS, "content": CONTENT_NS, "dc": DC_NS, "fh": FH_NS}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
GENERATOR = "Syndicate"


@dataclasses.dataclass(frozen=True)
class FeedSpec:
    """One feed: the site-wide one or one per tag, category or author."""

    key: str  # "all" | "tags/<slug>" | "categories/<slug>" | "authors/<slug>"
    title: str
    description: str
    html_url: str  # the HTML page this feed mirrors (rel=alternate, RSS channel link)
    author_name: str = ""  # feed-level atom:author (ATOM-2)

    @property
    def kind(self) -> str:
        return self.key.split("/", 1)[0]


@dataclasses.dataclass
class FeedDocument:
    """One document of a feed: the subscription document (page None) or archive `page`.

    entries are newest first. `archive_pages` is how many archive documents the feed
    has; the subscription document links to the newest (`prev-archive`), archive k
    links to k-1 (`prev-archive`), k+1 (`next-archive`) and the subscription document
    (`current`). A feed without archives is complete (`fh:complete`, PAGE-1).
    """

    spec: FeedSpec
    page: int | None
    archive_pages: int
    entries: list  # ApprovedArticle-like objects (see pipeline.content.editorial.ApprovedArticle)
    updated: dt.datetime

    @property
    def is_archive(self) -> bool:
        return self.page is not None

    @property
    def complete(self) -> bool:
        return self.page is None and self.archive_pages == 0

    @property
    def prev_page(self) -> int | None:
        if self.page is None:
            return self.archive_pages or None
        return self.page - 1 or None

    @property
    def next_page(self) -> int | None:
        if self.page is not None and self.page < self.archive_pages:
            return self.page + 1
        return None


def doc_path(key: str, fmt: str, page: int | None = None) -> str:
    """Where a feed document lives under public/, '/'-separated.

    feeds/all.atom, feeds/tags/<slug>.rss; archives: feeds/archive/all/3.atom,
    feeds/archive/tags/<slug>/3.json.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown feed format {fmt!r}")
    if page is None:
        return f"feeds/{key}.{fmt}"
    return f"feeds/archive/{key}/{page}.{fmt}"


def site_base(settings) -> str:
    return settings.site.base_url.rstrip("/")


def doc_url(settings, key: str, fmt: str, page: int | None = None) -> str:
    return f"{site_base(settings)}/{doc_path(key, fmt, page)}"


def listing_url(settings, key: str) -> str:
    """The HTML page of a feed: the home page for "all", else /tags/<slug>/ etc."""
    if key == "all":
        return site_base(settings) + "/"
    return f"{site_base(settings)}/{key}/"


def hub_urls(settings) -> list[str]:
    """The WebSub hubs: feeds.hubs plus every enabled partner of kind 'websub'."""
    hubs = list(settings.feeds.hubs)
    for partner in settings.partners:
        if partner.get("kind") == "websub" and partner.get("enabled", True) and partner.get("url"):
            hubs.append(partner["url"])
    return list(dict.fromkeys(hubs))


def make_spec(settings, key: str, label: str = "") -> FeedSpec:
    site = settings.site
    kind, _, slug = key.partition("/")
    label = label or slug
    if kind == "all":
        return FeedSpec(key, clean(site.title), clean(site.description or site.title), listing_url(settings, key))
    what = {"tags": "tag", "categories": "category", "authors": "author"}[kind]
    if kind == "authors":
        return FeedSpec(
            key,
            clean(f"{site.title}: articles by {label}"),
            clean(f"Articles by {label} in {site.title}."),
            listing_url(settings, key),
            clean(label),
        )
    return FeedSpec(
        key,
        clean(f"{site.title}: {what} {label}"),
        clean(f"Articles with the {what} {label!r} in {site.title}."),
        listing_url(settings, key),
    )


def clean(text: str | None) -> str:
    """Text safe for XML 1.0 (FG-8): control characters removed."""
    return strip_control_chars(text or "")


def rfc822(value: dt.datetime) -> str:
    """RFC 822 date with English names whatever the process locale (RSS-6, finding 0.3)."""
    return email.utils.format_datetime(as_utc(value), usegmt=True)


def entry_id(article) -> str:
    """The entry id: the article's page on our site. It depends only on the slug and
    base_url, so it never changes across rebuilds or edits (ATOM-5, RSS-5, JF-2)."""
    return article.url


def _categories(settings, article) -> list[dict]:
    base = site_base(settings)
    cats = []
    if article.category:
        cats.append({"term": article.category, "label": article.category, "scheme": f"{base}/categories/"})
    for tag in article.tags:
        cats.append({"term": tag, "label": tag, "scheme": f"{base}/tags/"})
    return cats


def has_enclosure(article) -> bool:
    """An image becomes an enclosure only when its length is known (RSS-9: length > 0)."""
    return bool(article.image and article.image_type and article.image_length and article.image_length > 0)


def _feed_entry(settings, article) -> FeedEntry:
    fe = FeedEntry()
    if article.canonical_url == article.url:
        fe.guid(entry_id(article), permalink=True)  # RSS-5: the value is the item's URL
    else:
        fe.guid(entry_id(article), permalink=False)
    fe.title(clean(article.title))
    fe.updated(as_utc(article.updated_at))  # FG-5/FG-6: aware, from the content
    fe.published(as_utc(article.published_at))
    # finding 0.3: published() also sets the RSS pubDate, which feedgen formats through
    # locale.setlocale() (process-wide, not thread-safe). Clear it; _fix_rss writes it.
    fe._FeedEntry__rss_pubDate = None
    author_url = http_url(article.author_url)
    fe.author(name=clean(article.author_name), **({"uri": author_url} if author_url else {}))
    fe.link(href=article.canonical_url, rel="alternate", type="text/html")
    if has_enclosure(article):
        fe.link(href=article.image, rel="enclosure", type=article.image_type, length=str(article.image_length))
    cats = _categories(settings, article)
    if cats:
        fe.category(cats)
    # FG-11: summary() is the Atom summary and the RSS description; never empty, or
    # feedgen puts the HTML into <description> instead of content:encoded.
    fe.summary(summary_text(article))
    fe.content(clean(article.body_html), type="html")  # never type="CDATA" (finding 0.5)
    return fe


def _generator(settings, doc: FeedDocument, hubs: Sequence[str]) -> FeedGenerator:
    """The feed-level part of a document. Entries are added afterwards (EntryCache)."""
    spec = doc.spec
    fg = FeedGenerator()
    fg.id(doc_url(settings, spec.key, "atom"))  # the same id on every document of the feed
    fg.title(spec.title)
    fg.updated(as_utc(doc.updated))  # FG-6: not "now"
    fg._FeedGenerator__rss_lastBuildDate = None  # finding 0.3: written by _fix_rss instead
    fg.author(name=spec.author_name or clean(settings.site.title))
    # finding 0.2: self before alternate; the RSS side is corrected afterwards anyway.
    fg.link(href=doc_url(settings, spec.key, "atom", doc.page), rel="self", type=MEDIA_TYPES["atom"])
    fg.link(href=spec.html_url, rel="alternate", type="text/html")
    if not doc.is_archive:
        for hub in hubs:
            fg.link(href=hub, rel="hub")
    else:
        fg.link(href=doc_url(settings, spec.key, "atom"), rel="current", type=MEDIA_TYPES["atom"])
    if doc.prev_page:
        fg.link(href=doc_url(settings, spec.key, "atom", doc.prev_page), rel="prev-archive", type=MEDIA_TYPES["atom"])
    if doc.next_page:
        fg.link(href=doc_url(settings, spec.key, "atom", doc.next_page), rel="next-archive", type=MEDIA_TYPES["atom"])
    fg.description(spec.description)
    if settings.site.language:
        fg.language(settings.site.language)
    fg.generator(GENERATOR)  # FG-6: no version string
    fg.docs("https://www.rssboard.org/rss-specification")
    fg.ttl(max(1, settings.feeds.max_age // 60))  # HTTP-5: the same as max-age
    return fg


def _atom_links(article) -> list[dict]:
    links = [{"rel": "alternate", "type": "text/html", "href": article.canonical_url}]
    if has_enclosure(article):
        links.append(
            {"rel": "enclosure", "type": article.image_type, "length": str(article.image_length), "href": article.image}
        )
    return links


class EntryCache:
    """Each article's Atom `<entry>` and RSS `<item>`, made once by feedgen's FeedEntry,
    corrected once and serialised once, then spliced as bytes into every document the
    article is in (an article is in the site feed, its tags', its category's and its
    author's, and later in their archives). The bytes are what lxml writes for the
    element at its place in a document (FG-12 in docs/standards.md): the same
    indentation, the same namespace prefixes, so a spliced document equals one
    serialised whole (tests/test_feeds_splice.py holds the two equal)."""

    def __init__(self, settings):
        self.settings = settings
        self._atom: dict = {}
        self._rss: dict = {}
        self._json: dict = {}
        self._json_text: dict = {}
        self._atom_bytes: dict = {}
        self._rss_bytes: dict = {}
        self._namespaces: dict = {}
        self._adopted: set = set()

    @staticmethod
    def _ident(article) -> tuple:
        return (entry_id(article), getattr(article, "content_hash", None) or id(article))

    def has(self, article) -> bool:
        """Whether this article's entries are here without being made from its text."""
        return self._ident(article) in self._adopted

    def _key(self, article):
        key = self._ident(article)
        if key not in self._atom and key not in self._adopted:
            fe = _feed_entry(self.settings, article)
            self._atom[key] = _fix_atom_entry(fe.atom_entry(), article)
            self._rss[key] = _fix_rss_item(fe.rss_entry(), article)
            self._json[key] = json_item(self.settings, article)
        return key

    def atom(self, article):
        return copy.deepcopy(self._atom[self._key(article)])

    def rss(self, article):
        return copy.deepcopy(self._rss[self._key(article)])

    def json(self, article) -> dict:
        return self._json[self._key(article)]  # never changed

    def json_bytes(self, article) -> bytes:
        """The item serialised and UTF-8 encoded once: an article's HTML is encoded once
        per build, not once per feed document it is in."""
        key = self._key(article)
        data = self._json_text.get(key)
        if data is None:
            data = self._json_text[key] = _json_text(self._json[key]).encode("utf-8")
        return data

    def atom_bytes(self, article) -> bytes:
        """The `<entry>` as it is written inside an Atom document: its lines, indented
        for depth 1, ending with a newline."""
        key = self._key(article)
        data = self._atom_bytes.get(key)
        if data is None:
            data = self._atom_bytes[key] = _spliceable(self.atom(article), ATOM_DEPTH, ATOM_SPLICE_NS)
        return data

    def rss_bytes(self, article) -> bytes:
        """The `<item>` as it is written inside an RSS document's channel (depth 2)."""
        key = self._key(article)
        data = self._rss_bytes.get(key)
        if data is None:
            data = self._rss_bytes[key] = _spliceable(self.rss(article), RSS_DEPTH, RSS_NSMAP)
        return data

    def export(self, article) -> tuple:
        """What another process's cache needs to splice this article (see `adopt`):
        a build makes each article's entries in one worker and hands them on."""
        key = self._key(article)
        self.namespaces([article], "atom")
        self.namespaces([article], "rss")
        return (
            key,
            self.atom_bytes(article),
            self.rss_bytes(article),
            self.json_bytes(article),
            self._namespaces[(key, "atom")],
            self._namespaces[(key, "rss")],
        )

    def adopt(self, exported: tuple) -> None:
        """Take an article's serialised entries made by `export` in another process.
        Only the bytes come over: the element trees stay behind, so a document of
        adopted entries is spliced, never serialised whole."""
        key, atom, rss, json_bytes, ns_atom, ns_rss = exported
        self._atom_bytes[key], self._rss_bytes[key], self._json_text[key] = atom, rss, json_bytes
        self._namespaces[(key, "atom")], self._namespaces[(key, "rss")] = ns_atom, ns_rss
        self._adopted.add(key)

    def reuse(self, article, atom: bytes, rss: bytes, json_bytes: bytes) -> bool:
        """Take an article's entries from documents an earlier build wrote (`split`),
        when its entries are known to be what this build would make: the same code,
        settings and article token (pipeline.site.build decides). The article may be
        light metadata (plan.Meta): only its id and content hash are read. False when
        an entry uses a namespace prefix this module does not write: it is made again."""
        atom_ns, rss_ns = _prefixed(atom, ATOM_SPLICE_NS), _prefixed(rss, RSS_NSMAP)
        if atom_ns is None or rss_ns is None:
            return False
        self.adopt((self._ident(article), atom, rss, json_bytes, atom_ns, rss_ns))
        return True

    def namespaces(self, articles, fmt: str) -> list[str]:
        """The namespaces the articles' Atom entries (fmt "atom") or RSS items ("rss")
        use: the document's root must declare them as it would with them in place."""
        found: set[str] = set()
        for article in articles:
            key = (self._key(article), fmt)
            ns = self._namespaces.get(key)
            if ns is None:
                element = (self._atom if fmt == "atom" else self._rss)[key[0]]
                ns = self._namespaces[key] = frozenset(_namespaces_of(element))
            found |= ns
        return sorted(found)


# Where entries sit in a document: Atom <feed><entry>, RSS <rss><channel><item>.
ATOM_DEPTH, RSS_DEPTH = 1, 2
ATOM_SPLICE_NS = {"fh": FH_NS}  # what an Atom entry's bytes are made under (_spliceable)
_SLOT = "syndicate-entries"  # an element standing where the entries go, replaced by their bytes


def _spliceable(element, depth: int, nsmap: dict) -> bytes:
    """`element` serialised as lxml writes it `depth` levels down a pretty-printed
    document whose root declares `nsmap` (the declarations cleanup_namespaces moves
    to the top): wrapped in `depth` ancestors, serialised, and cut out at its lines."""
    top = etree.Element("w", nsmap=nsmap)
    parent = top
    for _ in range(depth - 1):
        parent = etree.SubElement(parent, "w")
    parent.append(element)
    etree.cleanup_namespaces(top, top_nsmap=nsmap)
    data = etree.tostring(top, encoding="UTF-8", pretty_print=True)
    start = data.index(b"\n" + b"  " * depth + b"<") + 1
    end = data.rindex(b"\n" + b"  " * (depth - 1) + b"</w>") + 1
    return data[start:end]


def _namespaces_of(element) -> set[str]:
    found = set()
    for el in element.iter():
        for name in (el.tag, *el.attrib):
            if isinstance(name, str) and name.startswith("{"):
                found.add(name[1 : name.index("}")])
    return found


_ELEMENT_PREFIX = re.compile(rb"<([A-Za-z_][\w.-]*):")


def _prefixed(data: bytes, nsmap: dict) -> frozenset | None:
    """The namespaces an entry's bytes use (`_namespaces_of` of its element): the
    prefixes of its element names, each `<` being a tag (lxml escapes every `<` of a
    text). Attributes carry no prefix in the entries this module writes
    (tests/test_feeds_reuse.py holds the two equal). None when a prefix is not in
    `nsmap`, or the bytes declare a namespace of their own."""
    if b" xmlns" in data:
        return None
    found = set()
    for prefix in set(_ELEMENT_PREFIX.findall(data)):
        uri = nsmap.get(prefix.decode("ascii"))
        if uri is None:
            return None
        found.add(uri)
    return frozenset(found)


def _between(data: bytes, start: bytes, stop: bytes) -> list[bytes]:
    """Every run of `data` from a `start` line to the end of the next `stop` line; both
    begin with a newline so they match whole lines only."""
    out = []
    at = data.find(start)
    while at >= 0:
        end = data.find(stop, at)
        if end < 0:
            break
        end += len(stop)
        out.append(data[at + 1 : end])
        at = data.find(start, end - 1)
    return out


def _xml_text(chunk: bytes, start: bytes, stop: bytes) -> str | None:
    at = chunk.find(start)
    if at < 0:
        return None
    at = chunk.index(b">", at + len(start) - 1) + 1
    return xml_unescape(chunk[at : chunk.index(stop, at)].decode("utf-8"))


def _json_id(item: bytes) -> str:
    """The "id" of a JSON item's bytes, which begin `{"id":"`: decoded from a short head
    when the string ends there (a URL), else from the whole item."""
    try:
        return json.decoder.scanstring(item[:512].decode("utf-8", "ignore"), 7)[0]
    except ValueError:
        return json.decoder.scanstring(item.decode("utf-8"), 7)[0]


def split(fmt: str, data: bytes) -> dict[str, bytes]:
    """The entries of a document this module wrote (`render_document`), each as the
    bytes spliced into it: entry id -> bytes. Atom entries and RSS items are whole
    lines at their depth, and no text holds a `<` (lxml escapes it); JSON items are
    compact objects whose first member is "id", and no string holds a bare `"`, so
    `,{"id":"` begins an item and nothing else (json_item writes no other object
    with "id" first)."""
    out: dict[str, bytes] = {}
    if fmt == "atom":
        for chunk in _between(data, b"\n  <entry>\n", b"\n  </entry>\n"):
            ident = _xml_text(chunk, b"\n    <id>", b"</id>")
            if ident is not None:
                out[ident] = chunk
    elif fmt == "rss":
        for chunk in _between(data, b"\n    <item>\n", b"\n    </item>\n"):
            ident = _xml_text(chunk, b"\n      <guid", b"</guid>")
            if ident is not None:
                out[ident] = chunk
    elif fmt == "json":
        at = data.find(b',"items":[{"id":"')
        if at < 0 or not data.endswith(b"]}\n"):
            return out
        body = data[at + len(b',"items":[') : -len(b"]}\n")]
        for chunk in body.split(b',{"id":"'):
            if not chunk.startswith(b'{"id":"'):
                chunk = b'{"id":"' + chunk
            out[_json_id(chunk)] = chunk
    else:
        raise ValueError(f"unknown feed format {fmt!r}")
    return out


def _slot(namespaces: list[str]):
    """The element standing where the entries go: one child per namespace they use, so
    cleanup_namespaces declares on the root exactly what it would with them in place."""
    slot = etree.Element(_SLOT)
    for ns in namespaces:
        etree.SubElement(slot, "{%s}%s" % (ns, _SLOT))
    return slot


def _splice(document: bytes, chunks: list[bytes]) -> bytes:
    """Put the entries' bytes where the slot element stands (its whole lines)."""
    if not chunks:
        return document
    at = document.index(b"<" + _SLOT.encode())
    line_start = document.rindex(b"\n", 0, at) + 1
    close = b"</" + _SLOT.encode() + b">"
    end = document.find(close, at)
    end = document.index(b"\n", at if end < 0 else end) + 1
    return b"".join([document[:line_start], *chunks, document[end:]])


def _fix_atom_entry(entry, article):
    # feedgen builds the Atom tree without a namespace and sets a literal xmlns
    # attribute on the root, so the elements are found by their bare names here.
    # FG-3 (#135): feedgen drops every attribute but href on entry links.
    old = entry.findall("link")
    anchor = old[0].getprevious() if old else entry.find("content")
    for link in old:
        entry.remove(link)
    for attrs in reversed(_atom_links(article)):
        el = etree.Element("link")
        for k in ("rel", "type", "length", "href"):
            if k in attrs:
                el.set(k, attrs[k])
        if anchor is not None:
            anchor.addnext(el)
        else:
            entry.append(el)
    entry.find("updated").text = rfc3339(article.updated_at)  # ATOM-6: upper-case T and Z
    published = entry.find("published")
    if published is not None:
        published.text = rfc3339(article.published_at)
    return entry


def summary_text(article) -> str:
    """The entry's plain-text summary (the title when there is none, FG-11)."""
    return clean(article.summary) or clean(article.title)


def _fix_rss_item(item, article):
    # RSS readers render <description> as HTML: escape the plain text for HTML once
    # here; lxml escapes the result for XML (issue 19 item 6).
    item.find("description").text = html.escape(summary_text(article), quote=False)
    creator = etree.Element("{%s}creator" % DC_NS)
    creator.text = clean(article.author_name)
    item.find("guid").addprevious(creator)
    pub = etree.SubElement(item, "pubDate")
    pub.text = rfc822(article.published_at)  # RSS-6 / finding 0.3: never feedgen's setlocale()
    return item


def _fix_atom(settings, doc: FeedDocument, root, entries: EntryCache, splice: bool = True) -> None:
    root.find("updated").text = rfc3339(doc.updated)
    if doc.complete or doc.is_archive:
        root.append(etree.Element("{%s}%s" % (FH_NS, "complete" if doc.complete else "archive")))
    if doc.entries and splice:  # newest first, kept in that order (FG-4); spliced in by render_xml
        root.append(_slot(entries.namespaces(doc.entries, "atom")))
    elif doc.entries:  # the whole tree (FG-12's reference)
        root.extend(entries.atom(article) for article in doc.entries)
    etree.cleanup_namespaces(root, top_nsmap={"fh": FH_NS})


def _fix_rss(settings, doc: FeedDocument, root, hubs: Sequence[str], entries: EntryCache, splice: bool = True) -> None:
    spec = doc.spec
    channel = root.find("channel")
    channel.find("link").text = spec.html_url  # RSS-3, finding 0.2
    AL = "{%s}link" % ATOM_NS
    for link in channel.findall(AL):
        channel.remove(link)
    anchor = channel.find("description")
    rss_type = MEDIA_TYPES["rss"]
    links = [{"href": doc_url(settings, spec.key, "rss", doc.page), "rel": "self", "type": rss_type}]
    if not doc.is_archive:
        links += [{"href": hub, "rel": "hub"} for hub in hubs]  # FG-7 B, WS-1
    else:
        links.append({"href": doc_url(settings, spec.key, "rss"), "rel": "current", "type": rss_type})
    if doc.prev_page:
        links.append(
            {"href": doc_url(settings, spec.key, "rss", doc.prev_page), "rel": "prev-archive", "type": rss_type}
        )
    if doc.next_page:
        links.append(
            {"href": doc_url(settings, spec.key, "rss", doc.next_page), "rel": "next-archive", "type": rss_type}
        )
    for attrs in links:  # PAGE-4: RFC 5005 links as atom:link in the channel
        el = etree.Element(AL)
        for k in ("href", "rel", "type"):
            if k in attrs:
                el.set(k, attrs[k])
        anchor.addnext(el)
        anchor = el
    if doc.complete or doc.is_archive:
        anchor.addnext(etree.Element("{%s}%s" % (FH_NS, "complete" if doc.complete else "archive")))
    # RSS-6 / finding 0.3: dates formatted here, never by feedgen's setlocale() dance.
    build_date = etree.Element("lastBuildDate")
    build_date.text = rfc822(doc.updated)
    language = channel.find("language")
    (language if language is not None else channel.find("description")).addnext(build_date)
    if doc.entries and splice:  # spliced in by render_xml
        channel.append(_slot(entries.namespaces(doc.entries, "rss")))
    elif doc.entries:  # the whole tree (FG-12's reference)
        channel.extend(entries.rss(article) for article in doc.entries)
    etree.cleanup_namespaces(root, top_nsmap=RSS_NSMAP)


def _serialize(root) -> bytes:
    return etree.tostring(root.getroottree(), encoding="UTF-8", xml_declaration=True, pretty_print=True)


def render_xml(
    settings,
    doc: FeedDocument,
    hubs: Sequence[str] = (),
    entries: EntryCache | None = None,
    *,
    splice: bool = True,
) -> dict[str, bytes]:
    """The Atom and RSS bytes of one document, from one FeedGenerator. Each entry's
    bytes are made once per build and spliced in (FG-12); `splice=False` serialises
    the whole tree instead, the reference the spliced bytes must equal."""
    entries = entries or EntryCache(settings)
    fg = _generator(settings, doc, hubs)
    # feedgen 1.0.0 (pinned): _create_atom/_create_rss are what atom_str/rss_str
    # serialise; taking the tree saves a parse before the corrections below.
    atom_root, _ = fg._create_atom()
    _fix_atom(settings, doc, atom_root, entries, splice)
    rss_root, _ = fg._create_rss()
    _fix_rss(settings, doc, rss_root, hubs, entries, splice)
    if not splice:
        return {"atom": _serialize(atom_root), "rss": _serialize(rss_root)}
    return {
        "atom": _splice(_serialize(atom_root), [entries.atom_bytes(a) for a in doc.entries]),
        "rss": _splice(_serialize(rss_root), [entries.rss_bytes(a) for a in doc.entries]),
    }


def json_item(settings, a) -> dict:
    author_url = http_url(a.author_url)
    item: dict = {
        "id": entry_id(a),
        "url": a.canonical_url,
        "title": clean(a.title),
        "content_html": clean(a.body_html),
        "summary": summary_text(a),
        "date_published": rfc3339(a.published_at),
        "date_modified": rfc3339(a.updated_at),
        "authors": [{"name": clean(a.author_name), **({"url": author_url} if author_url else {})}],
    }
    if a.canonical_url != a.url:
        item["external_url"] = a.canonical_url
    if a.image:
        item["image"] = a.image
    tags = ([a.category] if a.category else []) + [t for t in a.tags if t != a.category]
    if tags:
        item["tags"] = tags
    if settings.site.language:
        item["language"] = settings.site.language
    if has_enclosure(a):
        item["attachments"] = [{"url": a.image, "mime_type": a.image_type, "size_in_bytes": a.image_length}]
    return item


def render_json(settings, doc: FeedDocument, hubs: Sequence[str] = (), entries: EntryCache | None = None) -> bytes:
    """JSON Feed 1.1 (JF-1..4). `next_url` leads to older entries (the archive chain)."""
    spec = doc.spec
    feed: dict = {
        "version": JSONFEED_VERSION,
        "title": spec.title,
        "home_page_url": spec.html_url,
        "feed_url": doc_url(settings, spec.key, "json", doc.page),
        "description": spec.description,
    }
    if settings.site.language:
        feed["language"] = settings.site.language
    feed["authors"] = [{"name": spec.author_name or clean(settings.site.title)}]
    if doc.prev_page:
        feed["next_url"] = doc_url(settings, spec.key, "json", doc.prev_page)
    if hubs and not doc.is_archive:
        feed["hubs"] = [{"type": "WebSub", "url": hub} for hub in hubs]
    entries = entries or EntryCache(settings)
    items = [entries.json_bytes(a) for a in doc.entries]
    # "items" is the last member: the head is serialised without it and the items,
    # serialised once each, are spliced in; the same bytes as one json.dumps of it all.
    head = _json_text(feed)
    return b"".join([head[:-1].encode("utf-8"), b',"items":[', b",".join(items), b"]}\n"])


def _json_text(value: dict) -> str:
    # compact: the C encoder (indent= would use the pure-Python one)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_document(
    settings, doc: FeedDocument, hubs: Sequence[str] = (), entries: EntryCache | None = None
) -> dict[str, bytes]:
    """All three formats of one document: {"atom": b"...", "rss": b"...", "json": b"..."}."""
    out = render_xml(settings, doc, hubs, entries)
    out["json"] = render_json(settings, doc, hubs, entries)
    return out


def latest(values: Iterable[dt.datetime], default: dt.datetime = EPOCH) -> dt.datetime:
    values = [as_utc(v) for v in values if v is not None]
    return max(values) if values else default


__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "FeedSpec",
    "FeedDocument",
    "doc_path",
    "doc_url",
    "listing_url",
    "hub_urls",
    "make_spec",
    "render_document",
    "render_xml",
    "render_json",
    "rfc822",
    "entry_id",
]
