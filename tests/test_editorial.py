"""Editorial approval on every database: pinning, policy flags, override, retraction."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pipeline.content.ingest import ingest
from pipeline.content.editorial import approve, approved_articles, history, reject, review_queue
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
