"""The digest message itself: MIME structure, headers, list headers, HTML rules.

Ids: MSG-1..5, LIST-1, LIST-2, LIST-6, BULK-6, SIZE-1, CSS-1, PRE-1, IMG-1, TPL-1, CAN-1,
SMTP-7. Messages are read back from the Maildir the email channel wrote (and, for
SMTP-7, from a real aiosmtpd server).
"""

from __future__ import annotations

import re
from email.utils import parseaddr, parsedate_to_datetime

import lxml.html
import pytest
from sqlalchemy import select

from pipeline.config import load_settings
from pipeline.digests import editions as digests
from pipeline.digests import render as digest_render
from pipeline.errors import ConfigError
from pipeline.store.schema import deliveries

from .conftest import write_project
from .digest_helpers import add_articles, add_subscriber, at, body, by_recipient, check_strict, drain, maildir_messages

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="630" viewBox="0 0 1200 630">'
    '<rect width="1200" height="630" fill="#123"/></svg>'
)
BODY_WITH_IMAGE = "Intro paragraph.\n\n![A chart of sleep hours](/images/chart.svg)\n\nMore text & more.\n"


def _project(app, n_subscribers=3, **article):
    root = app.settings.root
    (root / "content" / "images").mkdir(parents=True, exist_ok=True)
    (root / "content" / "images" / "hero.svg").write_text(SVG)
    (root / "content" / "images" / "chart.svg").write_text(SVG)
    spec = {
        "slug": "with-image",
        "title": article.get("title", "Sleep Better"),
        "tags": "[sleep]",
        "approved_at": at(days=1),
        "extra": 'image: images/hero.svg\nimage_alt: "A dark blue square"\n',
    }
    add_articles(app, [spec, {"slug": "plain", "approved_at": at(days=1, hours=1), "date": "2026-10-02T08:00:00Z"}])
    for i in range(n_subscribers):
        add_subscriber(app, f"reader{i}@example.com", name=f"Reader {i}", confirmed_at=at(-1))


@pytest.fixture
def digest_msgs(sqlite_app):
    _project(sqlite_app)
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=1, hours=6))
    drain(sqlite_app)
    return maildir_messages(sqlite_app)


def test_msg1_text_then_html(digest_msgs):
    for _data, msg in digest_msgs:
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None


def test_msg2_msg3_headers_and_unique_message_ids_on_our_domain(digest_msgs):
    ids = set()
    for _data, msg in digest_msgs:
        for name in (
            ("From", "To", "Date", "Message-ID", "Subject", "Reply-To")
            if msg["Reply-To"]
            else ("From", "To", "Date", "Message-ID", "Subject")
        ):
            assert msg[name], name
        assert parsedate_to_datetime(msg["Date"]).tzinfo is not None  # MSG-3
        mid = msg["Message-ID"]
        assert re.fullmatch(r"<[^@<>\s]+@news\.example\.com>", mid)
        ids.add(mid)
    assert len(ids) == len(digest_msgs) == 3


def test_msg4_smtp7_crlf_and_line_length(digest_msgs):
    for data, _msg in digest_msgs:
        assert b"\n" not in data.replace(b"\r\n", b"")  # no bare LF
        assert b"\r" not in data.replace(b"\r\n", b"")
        assert max(len(line) for line in data.split(b"\r\n")) <= 998
        header_block, body_block = data.split(b"\r\n\r\n", 1)
        assert max(len(line) for line in header_block.split(b"\r\n")) <= 998
        # every body line is quoted-printable or a MIME boundary/part header: <= 76 (RFC 2045 6.7)
        assert max(len(line) for line in body_block.split(b"\r\n")) <= 76


def test_msg4_quoted_printable_lines_stay_within_76_after_splicing_long_values(sqlite_app):
    """Issue 16 item 1 (RFC 2045 6.7): a long name and long links spliced into encoded
    lines; every line still <= 76, and the values decode back intact."""
    add_articles(sqlite_app, [{"slug": "a", "approved_at": at(days=1)}])
    long_name = "Maximilian-Alexander von und zu Überlänge-Namensträger " * 3
    add_subscriber(sqlite_app, "long@example.com", name=long_name.strip(), confirmed_at=at(-1))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=1, hours=6))
    drain(sqlite_app)
    ((data, msg),) = maildir_messages(sqlite_app)  # check_strict: every QP line <= 76
    body_block = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body_block.split(b"\r\n")) <= 76
    assert f"Hi {long_name.strip()}," in body(msg, "plain")
    assert f"Hi {long_name.strip()}," in body(msg, "html")


@pytest.mark.parametrize("before", ["", "Hi ", "a" * 75, "b" * 76, "c" * 74 + "é", "x" * 200 + "\n"])
@pytest.mark.parametrize("value", ["Ana", "v" * 76, "w" * 75 + "é", "https://news.example.com/u/" + "t" * 140, " sp "])
def test_msg4_values_spliced_between_soft_breaks_keep_lines_within_76(before, value):
    """Issue 16 item 1 (RFC 2045 6.7): whatever the text around a marker and the value
    spliced into it, every encoded line is <= 76 and it decodes to the text."""
    import quopri

    marker = digest_render.MARKERS["name_t"]
    skeleton = digest_render.qp_with_markers(f"{before}{marker}, after {marker}\nend\n")
    spliced = skeleton.replace(marker, digest_render._qp_value(value))
    assert all(len(line) <= 76 for line in spliced.split("\r\n")), spliced
    decoded = quopri.decodestring(spliced.encode("ascii")).decode("utf-8").replace("\r\n", "\n")
    assert decoded == f"{before}{value}, after {value}\nend\n"


def test_msg4_every_golden_email_passes_the_strict_check():
    """Issue 16 item 1: the goldens are what subscribers get; they obey RFC 2045 too."""
    from pathlib import Path

    from .digest_helpers import check_strict

    goldens = sorted((Path(__file__).parent / "data" / "golden").glob("*.eml"))
    assert len(goldens) >= 2
    for path in goldens:
        data = path.read_bytes().replace(b"\n", b"\r\n")
        check_strict(data)


def test_subject_non_ascii_keeps_its_spaces_when_folded():
    """Issue 16 item 10: the policy folder put a space between two RFC 2047 encoded
    words, where readers drop it ("Zuhörens«quoted»"); every space survives."""
    import email as email_lib

    for subject in [
        "shop über the Chloé «quoted» — xxxxxxxxxxxx Zuhörens «quoted» Chloé Zuhörens «quoted» Café title a — über",
        "€5 shop xxxxxxxxxxxx coffee a über — naïve title shop shop a coffee title naïve xxxxxxxxxxxx "
        "Zuhörens naïve and long résumé xxxxxxxxxxxx coffee Chloé",
        "Plain ASCII title that is long enough to be folded by the header folder, surely it is",
    ]:
        folded = digest_render.fold("Subject", subject)
        assert all(len(line) <= 78 for line in folded.split("\r\n"))
        msg = email_lib.message_from_bytes(folded.encode("ascii") + b"\r\n", policy=email_lib.policy.default)
        assert str(msg["Subject"]) == subject


def test_list1_list2_list_headers(digest_msgs):
    for _data, msg in digest_msgs:
        value = str(msg["List-Unsubscribe"])
        assert re.fullmatch(r"<[^>]+>(\s*,\s*<[^>]+>)*", value)
        uris = re.findall(r"<([^>]+)>", value)
        assert len([u for u in uris if u.startswith("https:")]) == 1
        assert any(u.startswith("mailto:") for u in uris)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Id"] == "Test Journal <digest.news.example.com>"


def test_list6_can1_visible_unsubscribe_preferences_and_postal_address(digest_msgs, sqlite_app):
    from pipeline.subscribers.links import preferences_url, unsubscribe_url

    with sqlite_app.engine.connect() as conn:
        rows = {
            r.target: r.subscriber_id for r in conn.execute(select(deliveries.c.target, deliveries.c.subscriber_id))
        }
    for _data, msg in digest_msgs:
        sid = rows[msg["To"].addresses[0].addr_spec]
        html, text = body(msg, "html"), body(msg, "plain")
        for part in (html, text):
            assert unsubscribe_url(sqlite_app.settings, sid) in part
            assert preferences_url(sqlite_app.settings, sid) in part
            assert "1 Example Street, Springfield 12345, USA" in part
        assert f"<{unsubscribe_url(sqlite_app.settings, sid)}>" in str(msg["List-Unsubscribe"])
        assert f"Hi {msg['To'].addresses[0].display_name}," in text


def test_bulk6_digest_from_differs_from_transactional(digest_msgs, sqlite_app):
    for _data, msg in digest_msgs:
        assert parseaddr(str(msg["From"]))[1] == "digest@news.example.com"
        assert parseaddr(str(msg["From"]))[1] != parseaddr(sqlite_app.settings.site.transactional_from)[1]


def test_bulk6_same_from_for_both_is_refused(tmp_path, sqlite_url):
    path = write_project(tmp_path / "p", sqlite_url)
    text = path.read_text().replace(
        'transactional_from = "Test Journal <hello@news.example.com>"',
        'transactional_from = "Test Journal <digest@news.example.com>"',
    )
    path.write_text(text)
    with pytest.raises(ConfigError, match="BULK-6"):
        digest_render.site_for_email(load_settings(path, env={}))


def _html_doc(msg):
    return lxml.html.document_fromstring(body(msg, "html").encode("utf-8"))


def test_pre1_preheader_is_first_and_hidden(digest_msgs):
    for _data, msg in digest_msgs:
        first = _html_doc(msg).body[0]
        style = first.get("style").replace(" ", "")
        for token in ("display:none", "max-height:0", "overflow:hidden", "mso-hide:all"):
            assert token in style
        # issue 16 item 2: tiny or background-coloured text fires HTML_FONT_LOW_CONTRAST
        # and FONT_INVIS_MSGID in SpamAssassin (tests/test_digests_spamassassin.py)
        assert "font-size" not in style and "color" not in style
        text = first.text_content()
        assert 0 < len(text) <= 100
        assert text == "Plain · Sleep Better"  # the titles, newest first


def test_img1_alt_size_and_absolute_src(digest_msgs):
    seen = 0
    for _data, msg in digest_msgs:
        for img in _html_doc(msg).iter("img"):
            seen += 1
            assert img.get("alt") is not None
            assert img.get("alt") == "A dark blue square"
            assert img.get("width") == "552" and img.get("height") == "290"
            assert img.get("src").startswith("https://news.example.com/")
    assert seen == 3


def test_img1_http_images_left_out_of_an_https_site(sqlite_app):
    site = digest_render.site_for_email(sqlite_app.settings)
    assert digest_render.image_view(sqlite_app.settings, site, "http://cdn.example.org/a.png", "x") is None
    view = digest_render.image_view(sqlite_app.settings, site, "https://cdn.example.org/a.png", "", 300, 100)
    assert view == {"src": "https://cdn.example.org/a.png", "alt": "", "width": 300, "height": 100}


def test_css1_inlined_table_layout(digest_msgs):
    for _data, msg in digest_msgs:
        html = body(msg, "html")
        assert not re.search(r"display\s*:\s*(flex|grid)", html)
        assert "<link" not in html and "@import" not in html
        assert "<script" not in html and "<form" not in html
        doc = _html_doc(msg)
        assert doc.xpath("//table[@width='600']")
        # layout comes from inline styles / attributes, not from classes
        for el in doc.xpath("//*[@class]"):
            assert el.get("style") or el.get("width"), lxml.html.tostring(el)[:80]
        style_blocks = doc.xpath("//style")
        assert all("@media" in s.text for s in style_blocks)  # only progressive enhancement left


def test_size1_html_part_under_100kb_with_the_largest_digest(make_app, sqlite_url):
    app = make_app(sqlite_url, "[digests]\nmax_articles = 40\n")
    long = "A sentence about sleep that goes on for a while. " * 80  # ~4 KB each
    add_articles(
        app,
        [
            {
                "slug": f"long-{i}",
                "summary": long,
                "approved_at": at(days=1, hours=i / 10),
                "date": f"2026-10-{i + 1:02d}T08:00:00Z",
            }
            for i in range(30)
        ],
    )
    add_subscriber(app, "big@example.com", confirmed_at=at(-1))
    digests.compose(app.engine, app.settings, "daily", now=at(days=2))
    drain(app)
    (msg,) = by_recipient(app)["big@example.com"]
    html = msg.get_body(("html",)).get_content()
    assert len(html.encode()) < 100_000
    listed = len(re.findall(r"Read the article", html))
    assert 10 < listed < 30
    assert f"And {30 - listed} more articles" in html
    assert "Unsubscribe" in html  # the footer survived


def test_tpl1_script_title_escaped_in_html_and_plain_in_text(sqlite_app):
    add_articles(
        sqlite_app, [{"slug": "xss", "title": "<script>alert(1)</script> Fish & Chips", "approved_at": at(days=1)}]
    )
    add_subscriber(sqlite_app, "r@example.com", confirmed_at=at(-1))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=1, hours=6))
    drain(sqlite_app)
    (msg,) = by_recipient(sqlite_app)["r@example.com"]
    html, text = body(msg, "html"), body(msg, "plain")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; Fish &amp; Chips" in html
    assert "<script>alert(1)</script> Fish & Chips" in text
    assert "&amp;" not in text and "&lt;" not in text
    assert msg["Subject"].endswith("<script>alert(1)</script> Fish & Chips")


def test_msg5_header_injection_in_a_name_is_refused(sqlite_app):
    add_articles(sqlite_app, [{"slug": "a", "approved_at": at(days=1)}])
    add_subscriber(sqlite_app, "evil@example.com", name="Eve\r\nBcc: victim@example.org", confirmed_at=at(-1))
    add_subscriber(sqlite_app, "fine@example.com", name="Fine", confirmed_at=at(-1))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=1, hours=6))
    report = drain(sqlite_app)
    assert report.sent == 1 and report.failed == 1
    assert list(by_recipient(sqlite_app)) == ["fine@example.com"]
    with sqlite_app.engine.connect() as conn:
        row = conn.execute(select(deliveries).where(deliveries.c.target == "evil@example.com")).mappings().one()
    assert row["state"] == "failed" and "MSG-5" in row["last_error"]
    for data, _msg in maildir_messages(sqlite_app):
        assert b"victim@example.org" not in data


def test_msg5_header_injection_in_a_subject_is_refused(sqlite_app):
    site = digest_render.site_for_email(sqlite_app.settings)
    with pytest.raises(digest_render.HeaderInjection):
        digest_render.fold("Subject", "Hello\r\nBcc: x@evil.example")
    # An article whose title would break the Subject line is left out; the rest go.
    add_articles(
        sqlite_app,
        [
            {"slug": "ok", "approved_at": at(days=1)},
            {"slug": "bad", "title": "Bad\r\nBcc: x@evil.example", "approved_at": at(days=1, hours=1)},
        ],
    )
    add_subscriber(sqlite_app, "r@example.com", confirmed_at=at(-1))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=1, hours=6))
    drain(sqlite_app)
    (msg,) = by_recipient(sqlite_app)["r@example.com"]
    assert "Bcc" not in str(msg["Subject"]) and msg["Bcc"] is None
    assert site.from_domain == "news.example.com"


@pytest.mark.parametrize("missing", ["postal_address", "base_url"])
def test_can1_rendering_fails_loudly_without_postal_address_or_base_url(tmp_path, sqlite_url, missing):
    path = write_project(tmp_path / "p", sqlite_url)
    text = re.sub(rf"^{missing} = .*$", f'{missing} = ""', path.read_text(), flags=re.M)
    path.write_text(text)
    settings = load_settings(path, env={})
    with pytest.raises(ConfigError, match=f"site.{missing}"):
        digest_render.site_for_email(settings)
    from pipeline.store import get_engine

    with pytest.raises(ConfigError):
        digests.compose(get_engine(settings.database_url), settings, "weekly")


def test_instant_email_body_images_get_size_and_alt(sqlite_app):
    root = sqlite_app.settings.root
    (root / "content" / "images").mkdir(parents=True, exist_ok=True)
    (root / "content" / "images" / "chart.svg").write_text(SVG)
    from .articles import write_article

    add_articles(sqlite_app, [{"slug": "seed", "approved_at": at(days=1)}])
    write_article(root, "charted", title="Charted", tags="[sleep]", body=BODY_WITH_IMAGE)
    from pipeline.content.editorial import approve
    from pipeline.content.ingest import ingest

    ingest(sqlite_app)
    with sqlite_app.engine.begin() as conn:
        approve(conn, ["charted"], editor="t")
    add_subscriber(sqlite_app, "i@example.com", frequency="instant", confirmed_at=at(-1))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "instant")
    drain(sqlite_app)
    msgs = {m["Subject"]: m for m in by_recipient(sqlite_app)["i@example.com"]}
    html = body(msgs["Charted"], "html")
    imgs = list(lxml.html.document_fromstring(html).iter("img"))
    assert imgs and all(i.get("alt") is not None and i.get("width") and i.get("height") for i in imgs)
    assert "More text &amp; more." in html


def test_smtp7_strict_server_accepts_every_digest(make_app, sqlite_url):
    """Against aiosmtpd (strict about line length): every digest is accepted, CRLF only."""
    from .delivery_kit import smtp_toml
    from .smtp_server import SMTPTestServer

    with SMTPTestServer() as server:
        app = make_app(sqlite_url, smtp_toml(server))
        _project(app, n_subscribers=4)
        digests.compose(app.engine, app.settings, "daily", now=at(days=1, hours=6))
        report = drain(app)
        assert report.sent == 4
        assert len(server.messages) == 4
        for received in server.messages:
            check_strict(received.data)  # RFC 2045/5322 as a strict receiver reads them
            assert b"\n" not in received.data.replace(b"\r\n", b"")
            assert received.mail_from.startswith("bounces+")  # VERP from the email channel
            assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in received.data


def test_list5_dkim_signature_covers_the_list_headers_of_a_digest(make_app, sqlite_url, tmp_path):
    """The hand-assembled digest bytes sign and verify (relaxed/relaxed), and the
    signature covers List-Unsubscribe and List-Unsubscribe-Post (LIST-5)."""
    import base64
    import subprocess

    import dkim

    from .delivery_kit import smtp_toml
    from .smtp_server import SMTPTestServer

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = base64.b64encode(
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
        ).stdout
    )
    with SMTPTestServer() as server:
        toml = smtp_toml(server, dkim_key_file=str(key)).replace(
            "smtp_timeout = 5.0", 'smtp_timeout = 5.0\ndkim_selector = "s1"\ndkim_domain = "news.example.com"'
        )
        app = make_app(sqlite_url, toml)
        _project(app, n_subscribers=1)
        digests.compose(app.engine, app.settings, "daily", now=at(days=1, hours=6))
        assert drain(app).sent == 1
        (received,) = server.messages
    data = received.data
    check_strict(data)
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: b"v=DKIM1; k=rsa; p=" + public)
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    h = re.search(r"\bh=([^;]+);", re.sub(r"\s+", "", header.split("DKIM-Signature:", 1)[1])).group(1)
    signed = [x.lower() for x in h.split(":")]
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed and "list-id" in signed


def test_size1_instant_alert_with_a_huge_body_falls_back_to_the_summary(sqlite_app):
    from pipeline.content.editorial import approve
    from pipeline.content.ingest import ingest

    from .articles import write_article

    write_article(
        sqlite_app.settings.root,
        "huge",
        title="Huge",
        tags="[sleep]",
        body="\n\n".join(["A long paragraph of text about sleep. " * 40] * 80),
    )
    add_articles(sqlite_app, [{"slug": "small", "approved_at": at(days=1)}])
    ingest(sqlite_app)
    with sqlite_app.engine.begin() as conn:
        approve(conn, ["huge"], editor="t")
    add_subscriber(sqlite_app, "i@example.com", frequency="instant", confirmed_at=at(-1))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "instant")
    drain(sqlite_app)
    msgs = {m["Subject"]: m for m in by_recipient(sqlite_app)["i@example.com"]}
    html = msgs["Huge"].get_body(("html",)).get_content()
    assert len(html.encode()) < 100_000
    assert "Read the article" in html and "Unsubscribe" in html


@pytest.mark.parametrize(
    "base_url,post,warned",
    [
        ("http://127.0.0.1:8000", False, False),
        ("http://news.example.com", False, True),
        ("https://news.example.com", True, False),
    ],
)
def test_list2_one_click_post_only_with_an_https_uri(make_app, sqlite_url, caplog, base_url, post, warned):
    """Issue 16 item 4 (RFC 8058 3.1): List-Unsubscribe-Post only when the
    List-Unsubscribe URI is https; an http base URL outside the demo (a loopback host)
    is warned about when the email stage starts."""
    import logging

    app = make_app(sqlite_url)
    app.settings.site.base_url = base_url
    add_articles(app, [{"slug": "a", "approved_at": at(days=1)}])
    add_subscriber(app, "r@example.com", confirmed_at=at(-1))
    with caplog.at_level(logging.WARNING, logger="pipeline.digests.render"):
        digests.compose(app.engine, app.settings, "daily", now=at(days=1, hours=6))
    drain(app)
    ((data, msg),) = maildir_messages(app)
    assert str(msg["List-Unsubscribe"]).startswith(f"<{base_url}/unsubscribe/")
    assert (msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click") is post
    assert (b"List-Unsubscribe-Post" in data) is post
    assert any("is not https" in r.getMessage() for r in caplog.records) is warned
