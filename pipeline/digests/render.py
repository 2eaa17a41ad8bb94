"""Rendering digests: templates -> a MIME skeleton shared by many recipients, and the
fast splice of one recipient's personal parts into it at send time.

Why a skeleton: building an `EmailMessage` costs about 2.8 ms a message and rendering
the templates another 0.24 ms (SMTP-8); a digest edition goes to many people who share
all but a few values. So an edition's variant (one article selection) is rendered once:
Jinja2 (autoescape on, TPL-1), CSS inlined with css-inline (CSS-1), both parts
quoted-printable encoded with CRLF line endings (MSG-4, SMTP-7), and markers left where
the personal values go (the name, the unsubscribe and preferences links, To, Date,
Message-ID, List-Unsubscribe). `personalise()` replaces the markers with values encoded
for their place (HTML-escaped in the HTML part, quoted-printable in both parts, folded
in headers). Markers never straddle a soft line break, because the text between
markers is encoded piece by piece, and each body marker sits alone on its line between
soft line breaks, so every encoded line stays within 76 characters whatever the value
(RFC 2045 6.7).

Every value that ends up in a header is checked for CR/LF first (MSG-5): a name or a
subject that tries to add a header line is refused with `HeaderInjection`.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.policy
import hashlib
import html
import logging
import re
from email.header import Header
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from pipeline import templating
from pipeline.config import Settings
from pipeline.digests import images
from pipeline.errors import ConfigError, SyndicateError
from pipeline.subscribers.addresses import format_to

log = logging.getLogger(__name__)

MAX_HTML_BYTES = 100_000  # SIZE-1: Gmail clips HTML bodies over ~102 KB
# Room kept free for the personal values (links are ~150 characters each).
PERSONAL_ALLOWANCE = 2_000
EMAIL_WIDTH = 600
IMAGE_WIDTH = 552  # the content column (600 - 2 x 24 padding)

# Markers: ASCII that quoted-printable leaves alone and no template produces.
# -T: value in the text part, -H: value in the HTML part.
MARKERS = {
    "name_t": "%%SYN-NAME-T%%",
    "name_h": "%%SYN-NAME-H%%",
    "unsub_t": "%%SYN-UNSUB-T%%",
    "unsub_h": "%%SYN-UNSUB-H%%",
    "prefs_t": "%%SYN-PREFS-T%%",
    "prefs_h": "%%SYN-PREFS-H%%",
    "to": "%%SYN-TO%%",
    "date": "%%SYN-DATE%%",
    "message_id": "%%SYN-MSGID%%",
    "list_unsubscribe": "%%SYN-LISTUNSUB%%",
}
_MARKER_RE = re.compile("(" + "|".join(re.escape(m) for m in MARKERS.values()) + ")")


class HeaderInjection(SyndicateError):
    """A header value (name, subject, address) contains a line break (MSG-5)."""


class DigestTooLarge(SyndicateError):
    """Even one article makes the HTML part larger than SIZE-1 allows."""


def check_header_value(what: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise HeaderInjection(
            f"{what} {value!r} contains a line break; refusing to build a message with it (MSG-5)",
            hint="Fix the value at its source (subscriber name, article title, settings).",
        )
    return value


# --- site requirements ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Site:
    """What every digest needs from [site], checked once (CAN-1: fails loudly)."""

    title: str
    base_url: str
    postal_address: str
    from_address: str
    from_domain: str
    reply_to: str
    list_id_header: str
    list_id: str
    language: str
    https: bool
    unsubscribe_domain: str


_sites: dict[int, tuple[Settings, Site]] = {}


def site_for_email(settings: Settings) -> Site:
    """`Site` for these settings, checked once per Settings object (they never change)."""
    hit = _sites.get(id(settings))
    if hit is not None and hit[0] is settings:
        return hit[1]
    site = _site_for_email(settings)
    warning = base_url_warning(settings)
    if warning:
        log.warning("%s", warning)
    if len(_sites) > 32:
        _sites.clear()
    _sites[id(settings)] = (settings, site)
    return site


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def base_url_warning(settings: Settings) -> str | None:
    """Why an http `site.base_url` hurts delivery, or None (https, or the demo on a
    loopback host). Said once when the email stage first loads these settings."""
    base_url = (settings.site.base_url or "").strip()
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not host or host in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    return (
        f"site.base_url {base_url} is not https: digests go out without List-Unsubscribe-Post, so "
        "Gmail and Yahoo offer no one-click unsubscribe (RFC 8058), and links are sent in clear; "
        "set [site] base_url to an https:// URL"
    )


def _site_for_email(settings: Settings) -> Site:
    from pipeline.config import require
    from pipeline.subscribers.links import list_id

    base_url = require(settings, "site.base_url", "every link in a digest starts with it").rstrip("/")
    if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
        raise ConfigError(
            f"site.base_url {base_url!r} is not an absolute http(s) URL",
            hint="Set [site] base_url to e.g. https://news.example.com.",
        )
    postal = require(settings, "site.postal_address", "CAN-SPAM requires a postal address in every digest (CAN-1)")
    sender = require(settings, "site.from_address", "digests need a From address")
    address = parseaddr(sender)[1]
    if "@" not in address:
        raise ConfigError(
            f"site.from_address {sender!r} has no email address", hint="Write it as 'Name <digest@news.example.com>'."
        )
    if settings.site.transactional_from and parseaddr(settings.site.transactional_from)[1].lower() == address.lower():
        raise ConfigError(
            "site.from_address and site.transactional_from are the same address (BULK-6)",
            hint="Use different From addresses for digests and for confirmations (BULK-6).",
        )
    for what, value in (
        ("site.title", settings.site.title),
        ("site.from_address", sender),
        ("site.reply_to", settings.site.reply_to),
        ("site.list_id", settings.site.list_id),
    ):
        check_header_value(what, value or "")
    lid = list_id(settings)
    domain = address.rpartition("@")[2]
    return Site(
        title=settings.site.title,
        base_url=base_url,
        postal_address=postal,
        from_address=sender,
        from_domain=domain,
        reply_to=settings.site.reply_to,
        list_id_header=settings.site.list_id or f"{settings.site.title} <{lid}>",
        list_id=lid,
        language=settings.site.language,
        https=base_url.startswith("https://"),
        unsubscribe_domain=settings.email.bounce_domain or domain,
    )


# --- templates --------------------------------------------------------------------------


def envs(settings: Settings):
    """(HTML environment, text environment) for digests: trimmed blocks, strict, TPL-1."""
    return (
        templating.environment(settings, html=True, trim=True, keep_trailing_newline=False),
        templating.environment(settings, html=False, trim=True),
    )


@lru_cache(maxsize=1)
def _inliner():
    import css_inline

    # keep_at_rules keeps the media queries (progressive enhancement) in <head>.
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def inline_css(document: str) -> str:
    result = _inliner().inline(document)
    if document.lstrip().lower().startswith("<!doctype") and not result.lstrip().lower().startswith("<!doctype"):
        result = "<!DOCTYPE html>\n" + result
    return result


# --- images -----------------------------------------------------------------------------

EMAIL_IMAGES_DIR = "email-images"  # under public/: PNGs made from our SVG/WebP images


def image_view(
    settings: Settings, site: Site, src: str, alt: str, width: int | None = None, height: int | None = None
) -> dict | None:
    """An <img> for an email (IMG-1): absolute src (https when the site is https), alt,
    width and height, and a type every client shows (PNG, JPEG, GIF). Our own SVG or
    WebP images are linked as the PNG made from them (public/email-images/); anyone
    else's are left out, as is anything that cannot be shown safely (None)."""
    if not src:
        return None
    from pipeline.content.sources.media import email_src

    src = email_src(settings, src)  # a stored SVG/WebP: the PNG copy ingest or the build made (issue 12)
    scheme = urlsplit(src).scheme
    if scheme not in ("http", "https") or (site.https and scheme != "https"):
        log.info("leaving out image %s: emails from an https site only link https images", src)
        return None
    local = None
    if src.startswith(site.base_url + "/"):
        rel = urlsplit(src).path[len(urlsplit(site.base_url).path) + 1 :]
        candidate = settings.path("paths.content") / rel
        if ".." not in Path(rel).parts and candidate.is_file():
            local = (rel, candidate)
    if local is None and not images.is_email_safe(urlsplit(src).path):
        log.info("leaving out image %s: email clients show only PNG, JPEG and GIF", src)
        return None
    if local is not None:
        rel, path = local
        if not (width and height):
            width, height = images.intrinsic_size(path) or (None, None)
        if not images.is_email_safe(path.name):
            try:
                png, png_w, png_h = images.email_image(
                    path, settings.path("paths.public") / EMAIL_IMAGES_DIR / Path(rel).parent
                )
            except images.ImageError as exc:
                log.warning("leaving out image %s: %s", src, exc.message)
                return None
            src = f"{site.base_url}/{EMAIL_IMAGES_DIR}/{(Path(rel).parent / png.name).as_posix()}"
            if not (width and height):
                width, height = png_w, png_h
    if not (width and height) or width <= 0 or height <= 0:
        width, height = 16, 9  # unknown: assume a wide picture
    shown_w = min(IMAGE_WIDTH, width) if width >= 100 else IMAGE_WIDTH
    return {"src": src, "alt": alt or "", "width": shown_w, "height": max(1, round(shown_w * height / width))}


# --- quoted-printable with markers --------------------------------------------------------


def _qp(text: str) -> str:
    """Quoted-printable of `text` (LF line ends in, CRLF out)."""
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")
    return encoded.replace("\r\n", "\n").replace("\n", "\r\n")


QP_MAX_LINE = 76  # RFC 2045 6.7 (5): encoded lines are at most 76 characters


def qp_with_markers(text: str) -> str:
    """Quoted-printable of `text`, each marker alone on its line between soft line
    breaks: "Hi =", marker "=", ", here...". A value spliced there later (encoded by
    `_qp_value`, last line at most 75 characters) keeps every line within 76 characters
    (RFC 2045 6.7, issue 16 item 1), and the splice stays one regex substitution."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    pieces = _MARKER_RE.split(text)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(piece + "=\r\n")
        elif i < len(pieces) - 1:
            # A space before a marker is not the end of a line: encode with a sentinel
            # after it so that it stays a plain space, then drop the sentinel.
            encoded = _room_for_soft_break(_qp(piece + "x")[:-1])
            out.append(encoded if not encoded or encoded.endswith("\r\n") else encoded + "=\r\n")
        else:
            out.append(_qp(piece))
    return "".join(out)


def _room_for_soft_break(encoded: str) -> str:
    """`encoded` with its last line at most 75 characters, so that "=" fits after it."""
    head, sep, last = encoded.rpartition("\r\n")
    if len(last) < QP_MAX_LINE:
        return encoded
    return head + sep + _wrap_line(last, QP_MAX_LINE - 1)


def _wrap_line(line: str, last_max: int = QP_MAX_LINE) -> str:
    """One encoded line split by soft line breaks (never inside an `=XX` escape) into
    lines of at most 76 characters, the last at most `last_max`."""
    out = []
    while len(line) > last_max:
        cut = QP_MAX_LINE - 1  # room for the "=" of the soft break
        if line[cut - 1] == "=":
            cut -= 1
        elif line[cut - 2] == "=":
            cut -= 2
        out.append(line[:cut] + "=")
        line = line[cut:]
    out.append(line)
    return "\r\n".join(out)


def _qp_value(value: str) -> str:
    """A personal value, quoted-printable, ready to sit between two soft breaks."""
    encoded = binascii.b2a_qp(value.encode("utf-8"), istext=False).decode("ascii")
    return _room_for_soft_break(encoded.replace("\r\n", "\n").replace("\n", "\r\n"))


def fold(name: str, value: str) -> str:
    """`Name: value` folded (RFC 2047 for non-ASCII), CRLF terminated.

    A non-ASCII Subject is encoded by `email.header.Header`, whose encoded words carry
    the spaces inside them: the policy folder puts the space between two encoded words,
    where RFC 2047 6.2 tells every reader to drop it ("Zuhörens«quoted»", issue 16
    item 10)."""
    check_header_value(name, value)
    if name.lower() == "subject" and not value.isascii():
        encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n", maxlinelen=78)
        return f"{name}: {encoded}\r\n"
    # Through the header object: policy.fold() alone leaves a short non-ASCII value as
    # raw UTF-8 (found with WordPress titles with typographic dashes, issue 12).
    return email.policy.SMTP.header_factory(name, value).fold(policy=email.policy.SMTP)


# --- rendering a variant ------------------------------------------------------------------


@dataclasses.dataclass
class RenderedPart:
    subject: str
    headers: str
    text_part: str
    html_part: str
    html_bytes: int
    html: str  # decoded, with markers (previews, the size guard)
    text: str


def _boundary(seed: str) -> str:
    # Starts with "==": quoted-printable writes "=" as "=3D", so it cannot occur in a body.
    return "==syndicate-" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:28]


def personal_markers() -> dict:
    return {"name": MARKERS["name_h"], "unsubscribe_url": MARKERS["unsub_h"], "preferences_url": MARKERS["prefs_h"]}


def render_variant(
    settings: Settings, site: Site, *, template: str, subject_template: str, context: dict, seed: str
) -> RenderedPart:
    """Render template `email/<template>.html|txt` once for everyone who shares `context`."""
    html_env, text_env = envs(settings)
    base = {"site": site, **context}
    # Only spaces and tabs are tidied: a line break in a title must be refused, not hidden.
    subject = re.sub(r"[ \t]+", " ", text_env.get_template(f"email/{subject_template}").render(**base).strip())
    check_header_value("subject", subject)
    text = text_env.get_template(f"email/{template}.txt").render(
        **base, name=MARKERS["name_t"], unsubscribe_url=MARKERS["unsub_t"], preferences_url=MARKERS["prefs_t"]
    )
    document = html_env.get_template(f"email/{template}.html").render(**base, **personal_markers())
    document = inline_css(document)
    # The size guard (SIZE-1) counts the personal values at a generous length.
    html_bytes = len(_MARKER_RE.sub("x" * 160, document).encode("utf-8"))
    boundary = _boundary(seed)
    headers = "".join(
        [
            fold("From", site.from_address),
            fold("Reply-To", site.reply_to) if site.reply_to else "",
            f"To: {MARKERS['to']}\r\n",
            fold("Subject", subject),
            f"Date: {MARKERS['date']}\r\n",
            f"Message-ID: {MARKERS['message_id']}\r\n",
            fold("List-Id", site.list_id_header),
            f"List-Unsubscribe: {MARKERS['list_unsubscribe']}\r\n",
            # RFC 8058 3.1: one-click only with an https URI in List-Unsubscribe (issue 16 item 4)
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" if site.https else "",
            "MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n',
        ]
    )
    text_part = (
        f'--{boundary}\r\nContent-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp_with_markers(text) + "\r\n"
    )
    html_part = (
        f'--{boundary}\r\nContent-Type: text/html; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp_with_markers(document) + f"\r\n--{boundary}--\r\n"
    )
    return RenderedPart(
        subject=subject,
        headers=headers,
        text_part=text_part,
        html_part=html_part,
        html_bytes=html_bytes,
        html=document,
        text=text,
    )


# --- the personal parts -------------------------------------------------------------------


@dataclasses.dataclass
class Personal:
    email: str
    name: str
    unsubscribe_url: str
    preferences_url: str
    message_id: str
    date: str = ""
    unsubscribe_mailto: str = ""


def personal_values(p: Personal) -> dict[str, str]:
    check_header_value("subscriber name", p.name)
    check_header_value("address", p.email)
    greeting = p.name or "there"
    # The name is quoted or RFC 2047-encoded as needed, the address never (its domain in
    # IDNA form; an SMTPUTF8 local part raw, RFC 6532: which addresses may have one is
    # decided at sign-up, pipeline.subscribers.addresses). An address header may run
    # past 78 characters (never past 998: names are at most 200).
    to = format_to(p.name, p.email, smtputf8=True)
    links = [f"<{p.unsubscribe_url}>"] + ([f"<{p.unsubscribe_mailto}>"] if p.unsubscribe_mailto else [])
    for link in links:
        check_header_value("List-Unsubscribe", link)
    return {
        MARKERS["name_t"]: _qp_value(greeting),
        MARKERS["name_h"]: _qp_value(html.escape(greeting)),
        MARKERS["unsub_t"]: _qp_value(p.unsubscribe_url),
        MARKERS["unsub_h"]: _qp_value(html.escape(p.unsubscribe_url)),
        MARKERS["prefs_t"]: _qp_value(p.preferences_url),
        MARKERS["prefs_h"]: _qp_value(html.escape(p.preferences_url)),
        MARKERS["to"]: to,
        MARKERS["date"]: p.date or date_header(),
        MARKERS["message_id"]: check_header_value("Message-ID", p.message_id),
        MARKERS["list_unsubscribe"]: ",\r\n ".join(links),
    }


def _now():
    from pipeline.timeutil import utcnow

    return utcnow()


_last_date: tuple = (None, "")


def date_header() -> str:
    """The Date value for now; formatted once per second (a batch of a few hundred
    messages shares a handful), the same text `format_datetime` gives."""
    global _last_date
    now = _now().replace(microsecond=0)
    second, text = _last_date
    if second != now:
        text = format_datetime(now)
        _last_date = (now, text)
    return text


def _crlf_only(text: str) -> bool:
    """Every line break in `text` is CRLF (SMTP-7): no bare LF."""
    return text.count("\n") == text.count("\r\n")


class Skeleton:
    """A MIME skeleton split once at its markers (issue 15 item 1): per recipient the
    static pieces, encoded to bytes once, are joined with the encoded values; no
    regular expression over the whole message and no encoding of it per message.

    What the email channel and the SMTP sender would otherwise scan every whole
    message for is known from the pieces: `crlf`, every static piece has CRLF line
    ends only (SMTP-7; a join can add a CRLF pair, never a bare LF), and `dots`, a
    static piece has a line that starts with "." (dot-stuffing, RFC 5321 4.5.2)."""

    __slots__ = ("pieces", "markers", "crlf", "dots")

    def __init__(self, skeleton: str):
        split = _MARKER_RE.split(skeleton)
        self.pieces = [piece.encode("utf-8") for piece in split[0::2]]
        self.markers = split[1::2]
        self.crlf = all(_crlf_only(piece) for piece in split[0::2])
        self.dots = any(b"\n." in piece for piece in self.pieces)

    def fill(self, values: dict[str, str]) -> Filled:
        """The bytes with every marker replaced, and what is known about them."""
        pieces = self.pieces
        out = [pieces[0]]
        crlf = self.crlf
        dots = self.dots
        last = pieces[0][-1:]  # the byte before the next chunk: a line starts after b"\n"
        for marker, piece in zip(self.markers, pieces[1:]):
            value = values[marker].encode("utf-8")
            if value:
                if b"\n" in value:
                    crlf = crlf and value.count(b"\n") == value.count(b"\r\n")
                    dots = dots or b"\n." in value
                dots = dots or (last == b"\n" and value[:1] == b".")
                last = value[-1:]
                out.append(value)
            if piece:  # its own lines were looked at once, in __init__
                dots = dots or (last == b"\n" and piece[:1] == b".")
                last = piece[-1:]
                out.append(piece)
        data = b"".join(out)
        return Filled(data, crlf, not dots and not data.startswith(b"."))


class Filled(NamedTuple):
    data: bytes
    crlf: bool  # CRLF line ends only: nothing for `to_crlf` to do (SMTP-7)
    dot_free: bool  # no line starts with ".": nothing to dot-stuff (RFC 5321 4.5.2)


def personalise(skeleton: str | Skeleton, p: Personal) -> bytes:
    """The message bytes for one recipient: markers replaced, nothing else touched.
    Every line stays within 76 characters: see `qp_with_markers`."""
    return personalise_checked(skeleton, p).data


def personalise_checked(skeleton: str | Skeleton, p: Personal) -> Filled:
    """`personalise`, with whether the bytes have CRLF line ends only (SMTP-7) and
    whether no line starts with "." (RFC 5321 4.5.2)."""
    if isinstance(skeleton, str):
        skeleton = Skeleton(skeleton)
    # ASCII but for an SMTPUTF8 address in To (RFC 6532 allows UTF-8 there).
    return skeleton.fill(personal_values(p))


def preview_values(p: Personal) -> dict[str, str]:
    """Decoded (not transfer-encoded) values, for writing previews and web versions."""
    greeting = p.name or "there"
    return {
        MARKERS["name_t"]: greeting,
        MARKERS["name_h"]: html.escape(greeting),
        MARKERS["unsub_t"]: p.unsubscribe_url,
        MARKERS["unsub_h"]: html.escape(p.unsubscribe_url),
        MARKERS["prefs_t"]: p.preferences_url,
        MARKERS["prefs_h"]: html.escape(p.preferences_url),
    }


def fill_preview(text: str, p: Personal) -> str:
    values = preview_values(p)
    return _MARKER_RE.sub(lambda m: values.get(m.group(0), ""), text)
