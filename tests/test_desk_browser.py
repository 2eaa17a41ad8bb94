"""The desk end to end in headless Chromium against `syndicate serve` on 127.0.0.1.

One journey, in the order people meet it: an author applies at /desk/join, confirms
from the email, an editor accepts; the author writes an article with an image and
submits it; the editor sees the policy flag, reads the diff and the three previews and
rejects with a reason; the author edits and resubmits; the editor approves; the article
is in the feeds and the next digest. An operator retries a failed delivery and pauses
a job. Screens are saved at 390 px and 1280 px to var/artifacts/desk/ (and the test's
tmp dir), for a person to look at.
"""

from __future__ import annotations

import email
import email.policy
import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, update

from pipeline import subscribers as subs
from pipeline.app import App
from pipeline.config import load_settings
from pipeline.content.editorial import approved_articles
from pipeline.delivery import outbox
from pipeline.delivery.worker import drain
from pipeline.ops import jobstate
from pipeline.store.schema import deliveries

from .conftest import REPO
from .desk_kit import make_user
from .test_browser import browser, free_port, require_browser, serving, wait_heading  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
ARTIFACTS = REPO / "var" / "artifacts" / "desk"


@pytest.fixture
def desk_served(make_app, sqlite_url, tmp_path):
    require_browser()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(sqlite_url)
    root = app.settings.root
    (root / "schedules").mkdir()
    shutil.copy(REPO / "schedules" / "default.toml", root / "schedules")
    config = str(app.settings.source)
    with serving(config, base, port):
        yield App(load_settings(config, env={"SYNDICATE_SITE__BASE_URL": base})), base


class Journey:
    def __init__(self, driver, app, base, tmp_path: Path):
        self.d, self.app, self.base, self.tmp = driver, app, base, tmp_path
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def by(self, css):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def go(self, path, heading=None):
        self.d.get(self.base + path)
        if heading:
            wait_heading(self.d, heading)

    def click(self, css, heading=None):
        self.by(css).click()
        if heading:
            wait_heading(self.d, heading)

    def type(self, css, text, clear=True):
        el = self.by(css)
        if clear:
            el.clear()
        el.send_keys(text)

    def shot(self, name):
        """The page at 390 px (a phone) and 1280 px (a laptop), full height."""
        for width in (390, 1280):
            self.d.set_window_size(width, 900)
            height = self.d.execute_script("return document.documentElement.scrollHeight")
            self.d.set_window_size(width, min(max(900, height + 100), 4000))
            overflow = self.d.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
            assert not overflow, f"{name}: the page is wider than a {width} px screen"
            for folder in (self.tmp, ARTIFACTS):
                self.d.save_screenshot(str(folder / f"{name}-{width}.png"))
        self.d.set_window_size(412, 915)

    def sign_in(self, who, password):
        self.go("/desk/login", "Sign in")
        self.type("#login-email", who)
        self.type("#login-password", password)
        self.click("#login-button")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.d, 20).until(lambda d: "/desk/login" not in d.current_url, "sign-in did not work")

    def sign_out(self):
        self.click("#logout", "Sign in")

    def last_mail_link(self):
        drain(self.app.settings, self.app.engine)
        files = sorted((self.app.settings.path("email.maildir") / "new").iterdir(), key=lambda p: p.stat().st_mtime)
        msg = email.message_from_bytes(files[-1].read_bytes(), policy=email.policy.default)
        return re.search(r"http://127\.0\.0\.1:\d+(/desk/\S+)", msg.get_body(("plain",)).get_content()).group(1)


def test_desk_journey_in_chromium(desk_served, browser, tmp_path):  # noqa: F811
    app, base = desk_served
    j = Journey(browser, app, base, tmp_path)
    make_user(app, "ed@example.com", ["editor"], name="Ed Itor", password="editor password 1")
    make_user(app, "op@example.com", ["operator"], name="Op Erator", password="operator password 1")
    with app.engine.begin() as conn:
        subs.add(conn, app.settings, "reader@example.com", frequency="instant", confirmed=True)

    # 1. An author applies, confirms from the email, is accepted by an editor.
    j.go("/desk/join", "Write for us")
    j.type("#join-name", "Ann Author")
    j.type("#join-email", "ann@example.com")
    j.type("#join-password", "ann's long password")
    j.shot("01-join")
    j.click("#join-button", "Check your inbox")
    j.go(j.last_mail_link(), "Confirm your address")
    j.click("#link-button", "Address confirmed")
    j.sign_in("ed@example.com", "editor password 1")
    j.go("/desk/applicants", "Author applications")
    j.click("button[id^=accept-]", "Author applications")
    assert "can now sign in" in j.by("#notice").text
    j.sign_out()

    # 2. The author writes an article with an image, sees the site's rule, submits.
    image = tmp_path / "table.png"
    buf = io.BytesIO()
    Image.new("RGB", (320, 200), (190, 120, 60)).save(buf, "PNG")
    image.write_bytes(buf.getvalue())
    j.sign_in("ann@example.com", "ann's long password")
    j.go("/desk/articles/new", "New article")
    j.type("#f-title", "Dinner Talk")
    j.type("#f-tags", "habits, home")
    j.type("#f-category", "home")
    j.type("#f-body", "We talk about the election over dinner.\n\nIt is *our* habit.")
    j.by("#f-image").send_keys(str(image))
    j.type("#f-alt", "A table set for two")
    j.click("#preview-button", "Edit: Dinner Talk")
    assert "This mentions ‘election’" in j.by("#policy-flags").text
    assert j.by("#preview img").get_attribute("alt") == "A table set for two"
    j.shot("02-author-preview")
    j.click("#submit-button", "Edit: Dinner Talk")
    assert j.by("#article-state").text == "waiting"
    j.sign_out()

    # 3. The editor sees the flag, reads the diff and the previews, rejects with a reason.
    j.sign_in("ed@example.com", "editor password 1")
    j.go("/desk/review", "Review queue")
    assert "no-politics" in j.by("#queue").text
    j.shot("03-review-queue")
    j.click("#queue a", "Dinner Talk")
    assert "election" in j.by("#flags").text and "election" in j.by("#body-diff").text
    j.click("#preview-page", "Dinner Talk")
    j.d.back()
    j.click("#preview-digest", "As a digest entry")
    assert "Read the article" in j.by("#digest-preview").text
    j.d.back()
    j.click("#preview-feed", "As a feed entry")
    assert "Dinner Talk" in j.by("#feed-atom").text
    j.d.back()
    wait_heading(j.d, "Dinner Talk")
    j.click("#reject-button", "Dinner Talk")  # no reason: refused, nothing decided
    assert "needs a reason" in j.by("#form-error").text.lower()
    j.type("#reject-reason", "Please leave the election out; the rest is lovely.")
    j.shot("04-review")
    j.click("#reject-button", "Review queue")
    j.sign_out()

    # 4. The author reads the reason, edits, resubmits.
    j.sign_in("ann@example.com", "ann's long password")
    j.go("/desk/articles", "Your articles")
    assert "Please leave the election out" in j.by("#my-articles").text
    j.shot("05-author-articles")
    j.click("#my-articles a", "Edit: Dinner Talk")
    j.type("#f-body", "We talk about the garden over dinner.\n\nIt is *our* habit.")
    j.click("#submit-button", "Edit: Dinner Talk")
    assert j.by("#article-state").text == "waiting"
    j.sign_out()

    # 5. The editor approves the new revision.
    j.sign_in("ed@example.com", "editor password 1")
    j.go("/desk/review/dinner-talk", "Dinner Talk")
    assert "garden" in j.by("#body-diff").text
    j.type("#approve-note", "Thank you")
    j.click("#approve-button", "Review queue")
    j.sign_out()

    # 6. In the feeds and the next digest.
    from pipeline.digests.editions import compose
    from pipeline.site.build import build

    with app.engine.connect() as conn:
        assert [a.slug for a in approved_articles(conn, app.settings)] == ["dinner-talk"]
    build(app)
    atom = (app.settings.path("paths.public") / "feeds" / "all.atom").read_text()
    assert "Dinner Talk" in atom and "/images/desk/" in atom
    assert compose(app.engine, app.settings, "instant").queued == 1
    assert drain(app.settings, app.engine).sent == 1
    digest = max((app.settings.path("email.maildir") / "new").iterdir(), key=lambda p: p.stat().st_mtime)
    assert "Dinner Talk" in digest.read_text(errors="replace")

    # 7. An operator retries a failed delivery and pauses a job.
    with app.engine.begin() as conn:
        outbox.enqueue(conn, channel="email", target="bounced@example.com", kind="confirm", key="failed-1", payload={})
        conn.execute(
            update(deliveries)
            .where(deliveries.c.idempotency_key == "failed-1")
            .values(state="failed", attempts=1, last_error="550 no such user")
        )
        failed_id = conn.execute(select(deliveries.c.id).where(deliveries.c.idempotency_key == "failed-1")).scalar()
    j.sign_in("op@example.com", "operator password 1")
    j.go("/desk/ops", "Operations")
    assert len(j.d.find_elements("css selector", "#charts svg")) == 3
    j.shot("06-ops-dashboard")
    j.go("/desk/ops/outbox?state=failed", "Outbox")
    j.click(f"#retry-{failed_id}")
    j.click("#retry-button", "Outbox")
    assert "queued again" in j.by("#notice").text
    j.go("/desk/ops/jobs", "Jobs")
    j.click("#pause-ingest", "Jobs")
    assert j.d.find_elements("css selector", "#resume-ingest")
    j.shot("07-ops-jobs")
    with app.engine.connect() as conn:
        assert outbox.get(conn, failed_id)["state"] == "queued"
    assert jobstate.is_paused(app.engine, "ingest")
    assert len(list(tmp_path.glob("0*.png"))) == 14


ONE_LINE_HEADINGS = """return [...document.querySelectorAll('table.data th')].filter(th => {
    const text = th.textContent.trim();
    if (!text || /\\s/.test(text)) return false;
    const range = document.createRange(); range.selectNodeContents(th);
    return range.getClientRects().length > 1;
  }).map(th => th.textContent.trim());"""


def test_review_headings_keep_their_words_on_a_laptop(desk_served, browser, tmp_path):  # noqa: F811
    """The review of a new article with a long summary, at 1280 px: every cell could break
    anywhere, so the diff's "Approved" column was squeezed and its heading read
    "Approve" / "d". A one-word heading now stays on one line where there is room."""
    from pipeline.content.ingest import ingest

    from .articles import write_article, write_author

    app, base = desk_served
    write_author(app.settings.root)
    summary = "An opinion piece on the garden, the kitchen and the long evenings of the autumn " * 2
    write_article(app.settings.root, "long-evenings", title="Long Evenings", extra=f"summary: {summary.strip()!r}\n")
    assert not ingest(app).errors
    make_user(app, "ed@example.com", ["editor"], name="Ed Itor", password="editor password 1")
    j = Journey(browser, app, base, tmp_path)
    j.sign_in("ed@example.com", "editor password 1")
    j.d.set_window_size(1280, 900)
    j.go("/desk/review/long-evenings", "Long Evenings")
    assert j.d.execute_script("return document.querySelectorAll('table.data th').length") > 3
    assert j.d.execute_script(ONE_LINE_HEADINGS) == []
    j.shot("review-new-article")
