"""Editorial approval on every database: pinning, policy flags, override, retraction."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from pipeline.content.editorial import approve, approved_articles, history, reject, review_queue
from pipeline.content.ingest import ingest
from pipeline.errors import EditorialError, NotFound
from pipeline.store.schema import approvals

from .articles import write_article, write_author

POLITICAL = """
The coming election matters. The government's new legislation is a disgrace, so
vote for change.
"""


@pytest.fixture
def site(app):
    write_author(app.settings.root)
    write_article(app.settings.root, "rituals", title="Small Rituals")
    write_article(app.settings.root, "sleep", title="On Sleep", date="2026-10-03T08:00:00Z", tags="[sleep]")
    write_article(app.settings.root, "vote-now", title="Vote Now", body=POLITICAL, date="2026-10-05T08:00:00Z")
    ingest(app)
    return app


def approved_slugs(app):
    with app.engine.connect() as conn:
        return [a.slug for a in approved_articles(conn, app.settings)]


def test_policy_flags_the_political_article_with_matches(site):
    with site.engine.connect() as conn:
        queue = {p.slug: p for p in review_queue(conn)}
    assert set(queue) == {"rituals", "sleep", "vote-now"}
    flags = queue["vote-now"].flags
    assert [f["rule"] for f in flags] == ["no-politics"]
    assert {"election", "government", "legislation", "vote for"} <= set(flags[0]["matches"])
    assert queue["rituals"].flags == [] and queue["sleep"].flags == []


def test_approve_all_skips_flagged_and_nothing_is_syndicated_before(site):
    assert approved_slugs(site) == []
    with site.engine.begin() as conn:
        decisions = approve(conn, editor="eve", all_pending=True)
    outcome = {d.slug: d.outcome for d in decisions}
    assert outcome == {"rituals": "approved", "sleep": "approved", "vote-now": "skipped"}
    assert approved_slugs(site) == ["sleep", "rituals"]  # newest first


def test_flagged_needs_override_which_is_recorded(site):
    with site.engine.begin() as conn, pytest.raises(EditorialError, match="flagged by no-politics"):
        approve(conn, ["vote-now"], editor="eve")
    with site.engine.begin() as conn:
        approve(conn, ["vote-now"], editor="eve", override="quoted for a history piece")
        rows = history(conn, "vote-now")
    assert rows[-1]["override_reason"] == "quoted for a history piece" and rows[-1]["editor"] == "eve"


def test_approval_is_pinned_to_the_revision_across_edits(site):
    root = site.settings.root
    with site.engine.begin() as conn:
        approve(conn, ["rituals"], editor="eve", note="fine")
        first_hash = conn.execute(select(approvals.c.content_hash)).scalar_one()
    write_article(root, "rituals", title="Small Rituals (edited)")
    ingest(site)
    with site.engine.connect() as conn:
        live = approved_articles(conn, site.settings)
        waiting = {p.slug: p for p in review_queue(conn)}
    # the approved revision is still what is syndicated, the edit waits with a diff
    assert [(a.slug, a.title, a.content_hash) for a in live] == [("rituals", "Small Rituals", first_hash)]
    assert "rituals" in waiting and "+title: Small Rituals (edited)" in waiting["rituals"].diff
    with site.engine.begin() as conn:
        approve(conn, ["rituals"], editor="eve")
    with site.engine.connect() as conn:
        live = approved_articles(conn, site.settings)
    assert live[0].title == "Small Rituals (edited)" and live[0].revision_number == 2
    assert live[0].approved_at is not None


def test_expected_hash_refuses_a_changed_revision(site):
    with site.engine.begin() as conn, pytest.raises(EditorialError, match="changed since you reviewed"):
        approve(conn, ["rituals"], editor="eve", expected_hash="0" * 64)


def test_reject_and_drafts(site):
    root = site.settings.root
    write_article(root, "draft-one", status="draft")
    ingest(site)
    with site.engine.begin() as conn:
        d = reject(conn, "vote-now", editor="eve", reason="Statements involving politics are not approved.")
        assert d.outcome == "rejected"
        with pytest.raises(EditorialError, match="is a draft"):
            approve(conn, ["draft-one"], editor="eve")
        with pytest.raises(EditorialError, match="needs a reason"):
            reject(conn, "sleep", editor="eve", reason=" ")
        with pytest.raises(NotFound):
            approve(conn, ["nope"], editor="eve")
    with site.engine.connect() as conn:
        assert "vote-now" not in {p.slug for p in review_queue(conn)}


def test_retracted_articles_leave_the_approved_query(site):
    with site.engine.begin() as conn:
        approve(conn, editor="eve", all_pending=True)
    (site.settings.root / "content" / "articles" / "sleep.md").unlink()
    assert ingest(site).retracted == ["sleep"]
    assert approved_slugs(site) == ["rituals"]
    from pipeline.content.editorial import retracted_articles

    with site.engine.connect() as conn:
        assert [a.slug for a in retracted_articles(conn, site.settings)] == ["sleep"]


# --- issue 16 item 8: words of the text a reader sees, phrase rules, an allow list -------


def flags_of(app, slug, body, **kwargs):
    write_article(app.settings.root, slug, body=body, **kwargs)
    report = ingest(app)
    assert not report.errors, [e.message for e in report.errors]
    with app.engine.connect() as conn:
        queue = {p.slug: p for p in review_queue(conn)}
    return queue[slug].flags


@pytest.mark.parametrize(
    "body",
    [
        "<table><tr><td>vote</td><td>for</td></tr></table>\n",  # the cells read "vote for"
        "<p><b>Vo</b>te <em>FOR</em> change</p>\n",
        "Please vo&shy;te for change.\n",  # a soft hyphen is invisible
        "Please vo\u200bte for change.\n",  # so is a zero-width space
        "Please ｖｏｔｅ ｆｏｒ change.\n",  # full-width letters
        "<ul><li>vote</li><li>for</li></ul>\n",
    ],
)
def test_issue16_8_policy_reads_words_across_element_boundaries_and_disguises(sqlite_app, body):
    write_author(sqlite_app.settings.root)
    flags = flags_of(sqlite_app, "sneaky", body)
    assert [f["rule"] for f in flags] == ["no-politics"] and flags[0]["matches"] == ["vote for"]
    assert flags[0]["excerpts"]


@pytest.mark.parametrize(
    "body",
    [
        "Our school won a government grant for a school garden.\n",
        "Office politics can wear anyone down.\n",
        "She is vice president of engineering.\n",
        "We voted... no, we chose pizza. Votefor is a made-up word; a devotee is not a voter*.\n".replace(
            "voter*", "fan"
        ),
    ],
)
def test_issue16_8_everyday_phrases_are_not_flagged_by_substring(sqlite_app, body):
    write_author(sqlite_app.settings.root)
    assert flags_of(sqlite_app, "everyday", body) == []


def test_issue16_8_the_political_article_still_shows_what_was_found_with_excerpts(site):
    with site.engine.connect() as conn:
        (flag,) = {p.slug: p for p in review_queue(conn)}["vote-now"].flags
    assert flag["matches"][:4] == ["election", "government", "legislation", "vote for"]
    assert any("coming election matters" in e for e in flag["excerpts"])


RULES_TOML = """
[[policy.rules]]
name = "no-gambling"
action = "flag"
phrases = ["casino*", "place a bet"]
allow = ["casino royale"]

[[policy.rules]]
name = "brand-names"
action = "warn"
phrases = ["acme"]
"""


def test_issue16_8_rules_phrases_prefixes_and_allow_lists_come_from_the_config(make_app, sqlite_url):
    app = make_app(sqlite_url, RULES_TOML)
    write_author(app.settings.root)
    flags = flags_of(app, "night-out", "We went to the Casinos downtown to <b>place</b> a bet, with ACME.\n")
    assert [(f["rule"], f["action"], f["matches"]) for f in flags] == [
        ("no-gambling", "flag", ["casinos", "place a bet"]),
        ("brand-names", "warn", ["acme"]),
    ]
    assert flags_of(app, "film", "We watched Casino Royale again.\n") == []
    # the configured rules replace the default one: politics is no longer this site's rule
    assert flags_of(app, "politics", "Vote for change.\n") == []


def test_issue16_8_seed_content_flags_only_the_political_article_with_shipped_and_default_rules():
    from pathlib import Path

    from pipeline.config import DEFAULT_POLICY_RULES, load_settings
    from pipeline.content.ingest import read_article
    from pipeline.content.policy import policy_flags

    repo = Path(__file__).resolve().parent.parent
    settings = load_settings(repo / "syndicate.toml", env={})
    known = {p.stem for p in (repo / "content" / "authors").glob("*.md")}
    for rules in (settings.policy_rules, DEFAULT_POLICY_RULES):
        flagged = {
            p.stem
            for p in sorted((repo / "content" / "articles").glob("*.md"))
            if policy_flags(rules, read_article(p, settings, known))
        }
        assert flagged == {"vote-against-the-surveillance-bill"}


# --- issue 16 item 18: the review diff covers every field ----------------------------------


def test_issue16_18_review_diff_shows_every_changed_field(site):
    root = site.settings.root
    write_author(root, "bo-chen", "Bo Chen")
    (root / "content" / "images").mkdir(parents=True)
    (root / "content" / "images" / "cup.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    with site.engine.begin() as conn:
        approve(conn, ["rituals"], editor="eve")
    # the same title and body: before, this waited with an empty diff
    write_article(
        root,
        "rituals",
        title="Small Rituals",
        author="bo-chen",
        tags="[habits, sleep]",
        category="wellbeing",
        date="2026-10-02T08:00:00Z",
        extra="summary: Another summary.\nimage: images/cup.svg\nimage_alt: A cup\n"
        "canonical_url: https://origin.example.org/rituals/\nupdated: 2026-10-03T08:00:00Z\n",
    )
    ingest(site)
    with site.engine.connect() as conn:
        diff = {p.slug: p for p in review_queue(conn)}["rituals"].diff
    for line in (
        "-author: ana-lee",
        "+author: bo-chen",
        "-category: relationships",
        "+category: wellbeing",
        "-tags: relationships, habits",
        "+tags: habits, sleep",
        "+summary: Another summary.",
        "-date: 2026-10-01T08:00:00Z",
        "+date: 2026-10-02T08:00:00Z",
        "+updated: 2026-10-03T08:00:00Z",
        "+image: https://news.example.com/images/cup.svg (41 bytes)",
        "+image_alt: A cup",
        "+canonical_url: https://origin.example.org/rituals/",
    ):
        assert line + "\n" in diff, line
    assert "+title:" not in diff and "Small rituals keep people close." not in diff.replace(" Small rituals", "")


# --- issue 16 item 19: overrides need a reason; one article's review and history -----------


@pytest.mark.parametrize("reason", ["  ", "\t\n"])
def test_issue16_19_a_blank_override_is_refused(site, reason):
    with site.engine.begin() as conn, pytest.raises(EditorialError, match="an override needs a reason"):
        approve(conn, ["vote-now"], editor="eve", override=reason)
    with site.engine.begin() as conn, pytest.raises(EditorialError, match="an override needs a reason"):
        approve(conn, ["rituals"], editor="eve", override=reason)
    assert approved_slugs(site) == []


def test_issue16_19_article_review_shows_the_waiting_revision_in_full_and_its_history(site):
    from pipeline.content.editorial import article_review

    root = site.settings.root
    with site.engine.begin() as conn:
        approve(conn, ["vote-now"], editor="eve", override="  quoted in a history piece ", note="checked")
    write_article(root, "vote-now", title="Vote Now, again", body=POLITICAL + "\nMore.\n", date="2026-10-05T08:00:00Z")
    ingest(site)
    with site.engine.begin() as conn:
        reject(conn, "vote-now", editor="max", reason="Still political.")
    write_article(root, "vote-now", title="Vote Now, third", body="Now about gardens.\n", date="2026-10-05T08:00:00Z")
    ingest(site)
    with site.engine.connect() as conn:
        r = article_review(conn, "vote-now")
        with pytest.raises(NotFound):
            article_review(conn, "nope")
    assert r.waiting and r.current.number == 3 and r.approved_number == 1
    assert r.current.document.startswith("title: Vote Now, third\nauthor: ana-lee\ndate: 2026-10-05T08:00:00Z\n")
    assert r.current.document.endswith("\nNow about gardens.\n")
    assert "-title: Vote Now\n" in r.current.diff and "+title: Vote Now, third\n" in r.current.diff
    assert [(h["number"], h["decision"], h["editor"], h["override_reason"], h["note"]) for h in r.history] == [
        (1, "approved", "eve", "quoted in a history piece", "checked"),
        (2, "rejected", "max", "", "Still political."),
    ]
    assert all(h["decided_at"] is not None for h in r.history)


def test_issue16_19_cli_review_slug_and_blank_override(make_app, sqlite_url):
    from click.testing import CliRunner

    from pipeline.cli import main

    app = make_app(sqlite_url)
    root = app.settings.root
    write_author(root)
    write_article(root, "vote-now", title="Vote Now", body=POLITICAL)

    def invoke(*args):
        return CliRunner().invoke(main, ["--config", str(root / "syndicate.toml"), *args], catch_exceptions=False)

    assert invoke("ingest").exit_code == 0
    r = invoke("approve", "vote-now", "--editor", "eve", "--override", "   ")
    assert r.exit_code == 1 and "an override needs a reason" in r.output and "hint:" in r.output
    r = invoke("review", "vote-now")
    assert r.exit_code == 0, r.output
    for text in (
        "vote-now r1: submitted",
        "title: Vote Now",
        "category: relationships",
        "no-politics",
        "The coming election matters.",
        "History: no decision yet.",
    ):
        assert text in r.output, text
    assert invoke("approve", "vote-now", "--editor", "eve", "--override", "quoted for history").exit_code == 0
    r = invoke("review", "vote-now")
    assert "No revision of this article waits for review." in r.output
    assert re.search(r"Z  r1 approved by eve, overriding the policy flags: quoted for history\n", r.output), r.output
    assert invoke("review", "nope").exit_code == 1


def test_issue16_8_the_policy_removes_every_invisible_format_character_before_matching():
    """FORMAT_CHARS is a hand-written list of ranges (one regex pass instead of a Python
    loop per character): it must cover every Cf character this Python knows."""
    import sys
    import unicodedata

    from pipeline.content.policy import FORMAT_CHARS

    cf = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert cf and all(FORMAT_CHARS.fullmatch(ch) for ch in cf)
    assert not FORMAT_CHARS.search("vote for \xa0é ｖ")


def test_approve_all_reads_the_queue_in_one_statement_and_writes_in_batches(app):
    """approve --all at 10,000 articles: the queue is read with one query (not the review
    screen's documents and diffs, nor one query per 500 slugs), and the writes go in
    batches of 500, so the statement count grows with the batches, not the articles.
    Decisions come in the review queue's order, drafts and flagged revisions skipped."""
    from sqlalchemy import event

    write_author(app.settings.root)
    for i in range(620):
        write_article(app.settings.root, f"piece-{i:04d}", title=f"Piece {i}", date="2026-10-01T08:00:00Z")
    write_article(app.settings.root, "a-draft", status="draft")
    write_article(app.settings.root, "vote-now", title="Vote Now", body=POLITICAL)
    ingest(app)
    with app.engine.connect() as conn:
        queue = [p.slug for p in review_queue(conn)]
    statements: list[str] = []
    with app.engine.begin() as conn:
        event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        decisions = approve(conn, editor="eve", all_pending=True)
    assert [d.slug for d in decisions] == queue
    assert {d.slug for d in decisions if d.outcome != "approved"} == {"vote-now"}
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1
    # approvals insert (1 per 5,000) + per 500 articles: superseded, first approval,
    # approved, and the articles' approved revision (4 x 2); no statement per article.
    assert len(statements) <= 1 + 1 + 4 * 2
    from sqlalchemy import select

    from pipeline.store.schema import approvals, articles

    with app.engine.connect() as conn:
        pointers = conn.execute(
            select(articles.c.slug, articles.c.approved_revision_id, articles.c.current_revision_id)
        ).all()
        approved = dict(conn.execute(select(approvals.c.revision_id, approvals.c.editor)).all())
    assert len(approved) == 620
    for slug, approved_revision, current_revision in pointers:
        if slug in ("a-draft", "vote-now"):
            assert approved_revision is None
        else:  # each article points at the revision its approval row names
            assert approved_revision == current_revision and approved[approved_revision] == "eve", slug


@pytest.mark.xdist_group("processes")
def test_an_error_while_storing_a_batch_stops_the_parse_workers_at_once_and_writes_nothing(app, monkeypatch):
    """Ingest stores a batch while its workers parse the next. When storing fails, the
    whole ingest is rolled back (nothing written, the first batch included) and the
    worker processes are gone when the error reaches the caller, while the caller still
    holds the traceback (ingest's frame): the unwinding closes the parse generator."""
    import multiprocessing
    import threading

    from sqlalchemy import func, select

    from pipeline.content import ingest as ingest_module
    from pipeline.store.schema import articles

    if threading.active_count() > 1:
        pytest.skip("worker processes are only forked from a single-threaded process")
    monkeypatch.setattr(ingest_module, "PARALLEL_THRESHOLD", 4)
    monkeypatch.setattr(ingest_module, "STORE_BATCH", 3)
    write_author(app.settings.root)
    for i in range(12):
        write_article(app.settings.root, f"piece-{i:04d}", title=f"Piece {i}", date="2026-10-01T08:00:00Z")
    real = ingest_module._store_revisions
    calls = []

    def failing(conn, parsed_ok, current, now, *stamps):
        calls.append(len(parsed_ok))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(conn, parsed_ok, current, now, *stamps)

    monkeypatch.setattr(ingest_module, "_store_revisions", failing)
    with pytest.raises(RuntimeError, match="disk full") as caught:
        ingest(app)
    assert caught.value.__traceback__ is not None and calls == [3, 3]
    assert multiprocessing.active_children() == []
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(articles)).scalar() == 0


def test_ingest_writes_new_articles_in_a_few_statements_per_batch(app):
    """Ingest stores parsed articles in batches (ingest.STORE_BATCH): per batch one bulk
    insert of the articles, one read of their ids, one bulk insert of the revisions,
    one read of theirs and one executemany update. Before, an INSERT .. RETURNING in
    parameter order ran one statement per row on SQLite: 1,245 writes for these 620 articles.
    Each article's current revision is its own."""
    from sqlalchemy import event, select

    from pipeline.content import ingest as ingest_module
    from pipeline.store.schema import articles, revisions

    write_author(app.settings.root)
    for i in range(620):
        write_article(app.settings.root, f"piece-{i:04d}", title=f"Piece {i}", date="2026-10-01T08:00:00Z")
    statements: list[str] = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(app.engine, "before_cursor_execute", note)
    try:
        report = ingest(app)
    finally:
        event.remove(app.engine, "before_cursor_execute", note)
    assert len(report.new) == 620 and not report.errors
    batches = -(-620 // ingest_module.STORE_BATCH)
    writes = [s for s in statements if not s.lstrip().upper().startswith(("SELECT", "PRAGMA"))]
    assert len(writes) <= 3 * batches + 2, f"{len(writes)} writes for {batches} batches"
    assert len(statements) <= 5 * batches + 12, f"{len(statements)} statements"
    with app.engine.connect() as conn:
        rows = conn.execute(
            select(articles.c.slug, revisions.c.title, revisions.c.number).select_from(
                articles.join(revisions, revisions.c.id == articles.c.current_revision_id)
            )
        ).all()
    assert len(rows) == 620
    assert all(title == f"Piece {int(slug[6:])}" and number == 1 for slug, title, number in rows)
