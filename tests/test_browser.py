"""End to end in a real browser: headless Chromium (Debian's chromium + chromedriver,
through selenium) against `syndicate serve` on 127.0.0.1. Fill the form, read the
confirmation email from the Maildir, confirm, change preferences, unsubscribe.
Screenshots land in the test's tmp dir (phone-sized window)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import subscribers as subs
from pipeline.app import App
from pipeline.config import load_settings
from pipeline.delivery.worker import drain

from .articles import write_article, write_author

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]  # one Chromium at a time
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SYNDICATE = Path(sys.executable).with_name("syndicate")


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"syndicate serve exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def serving(config: str, base: str, port: int):
    """`syndicate serve` on 127.0.0.1:`port` for the project `config`, its links made
    absolute against `base`; stopped when the block ends."""
    env = {**os.environ, "SYNDICATE_SITE__BASE_URL": base}
    env.pop("SYNDICATE_CONFIG", None)
    proc = subprocess.Popen(
        [str(SYNDICATE), "--config", config, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(f"{base}/healthz", proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def served(make_app, sqlite_url, tmp_path):
    """A project with two approved articles, and `syndicate serve` running on it."""
    require_browser()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(sqlite_url)
    root = app.settings.root
    write_author(root)
    write_article(root, "rituals", tags="[relationships, habits]", category="relationships")
    write_article(root, "focus", title="Focus at Work", tags="[work, habits]", category="work")
    config = str(app.settings.source)
    from pipeline.content.editorial import approve
    from pipeline.content.ingest import ingest

    ingest(app)
    with app.engine.begin() as conn:
        approve(conn, all_pending=True, editor="eve")
    with serving(config, base, port):
        yield App(load_settings(config, env={"SYNDICATE_SITE__BASE_URL": base})), base


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=412,915",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_heading(driver, text: str, timeout: float = 20.0) -> None:
    """Wait for the next page (a click returns before the navigation completes)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def arrived(d):
        try:
            return d.find_element(By.TAG_NAME, "h1").text == text
        except WebDriverException:  # the old page went away under us
            return False

    WebDriverWait(driver, timeout).until(arrived, f"no page with heading {text!r}; at {driver.current_url}")


def shot(driver, tmp_path: Path, name: str) -> None:
    # Full-page height so a reviewer sees the whole page in one picture.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(412, min(max(915, height + 120), 4000))
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    driver.set_window_size(412, 915)


def test_subscribe_confirm_preferences_unsubscribe_in_chromium(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    app, base = served
    b = browser

    # 1. The landing page: the form, labelled, reachable by keyboard.
    b.get(base + "/")
    assert "Get the digest by email" in b.page_source
    email_input = b.find_element(By.ID, "sub-email")
    label = b.find_element(By.CSS_SELECTOR, "label[for=sub-email]")
    assert label.text == "Email address"
    email_input.send_keys("reader@example.com")
    email_input.send_keys(Keys.TAB)
    assert b.switch_to.active_element.get_attribute("id") == "sub-name", "Tab moves to the next field"
    b.switch_to.active_element.send_keys("Rea Der")
    b.find_element(By.CSS_SELECTOR, "input[name=frequency][value=daily]").click()
    b.find_element(By.CSS_SELECTOR, "input[name=topics][value=work]").click()
    shot(b, tmp_path, "01-form")
    b.find_element(By.CSS_SELECTOR, "form.subscribe button[type=submit]").click()
    wait_heading(b, "Check your inbox")
    shot(b, tmp_path, "02-check-inbox")

    # 2. The confirmation email, from the Maildir: the web service sends it itself, at
    # once (issue 16 item 22); no `deliver` run is needed.
    new = app.settings.path("email.maildir") / "new"
    deadline = time.monotonic() + 30
    while not (new.is_dir() and any(new.iterdir())):
        assert time.monotonic() < deadline, "the confirmation email never arrived"
        time.sleep(0.05)
    assert drain(app.settings, app.engine).sent == 0, "nothing left for the workers"
    files = list(new.iterdir())
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["To"] == "reader@example.com"
    link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", msg.get_body(("plain",)).get_content()).group(0)

    # 3. Opening the link confirms nothing; the button does.
    b.get(link)
    wait_heading(b, "Confirm your subscription")
    with app.engine.connect() as conn:
        assert subs.get(conn, "reader@example.com")["state"] == "unconfirmed"
    shot(b, tmp_path, "03-confirm")
    b.find_element(By.ID, "confirm-button").click()
    wait_heading(b, "You are subscribed")
    shot(b, tmp_path, "04-confirmed")
    with app.engine.connect() as conn:
        sub = subs.get(conn, "reader@example.com")
    assert (sub["state"], sub["frequency"], sub["topics"], sub["name"]) == ("confirmed", "daily", ["work"], "Rea Der")

    # 4. Preferences.
    b.find_element(By.ID, "preferences-link").click()
    wait_heading(b, "Your preferences")
    b.find_element(By.CSS_SELECTOR, "input[name=frequency][value=weekly]").click()
    b.find_element(By.CSS_SELECTOR, "input[name=topics][value=habits]").click()
    Select(b.find_element(By.ID, "pref-timezone")).select_by_visible_text("Europe/Berlin")
    b.find_element(By.ID, "save-preferences").click()
    WebDriverWait(b, 20).until(lambda d: d.find_elements(By.ID, "saved"), "preferences were not saved")
    shot(b, tmp_path, "05-preferences")
    with app.engine.connect() as conn:
        sub = subs.get(conn, "reader@example.com")
    assert (sub["frequency"], sub["topics"], sub["timezone"]) == ("weekly", ["habits", "work"], "Europe/Berlin")

    # 5. Unsubscribe: a page, then one button.
    b.find_element(By.ID, "unsubscribe-link").click()
    wait_heading(b, "Unsubscribe")
    with app.engine.connect() as conn:
        assert subs.get(conn, "reader@example.com")["state"] == "confirmed"
    shot(b, tmp_path, "06-unsubscribe")
    b.find_element(By.ID, "unsubscribe-button").click()
    wait_heading(b, "You are unsubscribed")
    shot(b, tmp_path, "07-unsubscribed")
    with app.engine.connect() as conn:
        sub = subs.get(conn, "reader@example.com")
        kinds = [e["kind"] for e in subs.history(conn, sub["id"])]
    assert sub["state"] == "unsubscribed"
    assert kinds == ["signup", "confirm_sent", "confirmed", "preferences", "unsubscribed"]
    assert len(list(tmp_path.glob("*.png"))) == 7


def test_a_reader_pages_through_a_tag_in_chromium(make_app, sqlite_url, browser, tmp_path):
    """A tag page holds the newest articles; the reader clicks 'Older articles' to the
    oldest page and 'Newer articles' back, and meets every article of the tag once."""
    from selenium.webdriver.common.by import By

    from pipeline.site.build import build

    from .feedsite import add_articles, feeds_toml, publish

    require_browser()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(sqlite_url, feeds_toml(max_entries=3, archive_size=2))
    add_articles(app, 15)
    publish(app)
    config = str(app.settings.source)
    built = App(load_settings(config, env={"SYNDICATE_SITE__BASE_URL": base}))
    assert not build(built).errors
    with serving(config, base, port):
        b = browser
        b.get(f"{base}/tags/habits/")
        wait_heading(b, "Tag: habits")
        shot(b, tmp_path, "tag-newest")
        seen, headings = [], []
        while True:
            headings.append(b.find_element(By.TAG_NAME, "h1").text)
            seen += [a.text for a in b.find_elements(By.CSS_SELECTOR, "ul.articles li > a")]
            older = b.find_elements(By.LINK_TEXT, "Older articles")
            if not older:
                break
            if len(headings) == 2:  # a page with both links
                shot(b, tmp_path, "tag-middle")
            number = re.search(r"/page/(\d+)/$", older[0].get_attribute("href")).group(1)
            older[0].click()
            wait_heading(b, f"Tag: habits (page {number})")
        shot(b, tmp_path, "tag-oldest")
        with built.engine.connect() as conn:
            from pipeline.site.plan import load_meta

            expected = sorted(m.title for m in load_meta(conn, built.settings) if "habits" in m.tags)
        assert sorted(seen) == expected and len(seen) == len(set(seen))
        assert headings[-1] == "Tag: habits (page 1)" and len(headings) >= 3
        for heading in reversed(headings[:-1]):
            b.find_element(By.LINK_TEXT, "Newer articles").click()
            wait_heading(b, heading)
        assert not b.find_elements(By.LINK_TEXT, "Newer articles")
        assert b.current_url == f"{base}/tags/habits/"
        # The home page's byline links the author: it read as a second headline (the
        # title's weight and size applied to every link of the list item).
        b.get(f"{base}/")
        title = b.find_element(By.CSS_SELECTOR, "ul.articles li > a")
        author = b.find_element(By.CSS_SELECTOR, "ul.articles li .muted a")
        assert title.value_of_css_property("font-weight") == "600"
        assert author.value_of_css_property("font-weight") == "400"
        assert author.value_of_css_property("font-size") != title.value_of_css_property("font-size")
