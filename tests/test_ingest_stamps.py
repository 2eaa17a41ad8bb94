"""Ingest skips a file whose stamp (size, mtime, ctime, inode) and current revision are
those recorded when it was last read, as git's index does, and reads it again whenever
one of them may have changed. Every case counts the article files ingest opens."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import select, update

import pipeline.content.ingest as ingest_module
from pipeline.content.ingest import ingest
from pipeline.store.schema import articles, revisions

from .articles import write_article, write_author


@pytest.fixture
def opened(monkeypatch):
    """The article files ingest opens, in order."""
    seen: list[str] = []
    real = open

    def counting(path, *args, **kwargs):
        if str(path).endswith(".md") and "articles" in str(path):
            seen.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "open", counting, raising=False)
    return seen


@pytest.fixture
def settled(monkeypatch):
    """Files written before an ingest starts count as settled (no 2 s wait in a test)."""
    monkeypatch.setattr(ingest_module, "RACY_NS", 0)


def site(app, count: int = 3) -> list:
    write_author(app.settings.root)
    paths = [write_article(app.settings.root, f"piece-{i}", title=f"Piece {i}") for i in range(count)]
    time.sleep(0.02)  # past the file system clock's tick
    return paths


def stamps(app) -> dict[str, str | None]:
    with app.engine.connect() as conn:
        return dict(conn.execute(select(articles.c.slug, articles.c.source_stamp)).all())


def test_an_unchanged_file_is_not_read_again(app, opened, settled):
    site(app)
    first = ingest(app)
    assert sorted(first.new) == ["piece-0", "piece-1", "piece-2"] and len(opened) == 3
    assert all(stamps(app).values())
    opened.clear()
    again = ingest(app)
    assert opened == [] and again.unchanged == 3 and not again.new and not again.changed


def test_a_file_rewritten_with_its_size_and_mtime_put_back_is_read_again(app, opened, settled):
    paths = site(app)
    ingest(app)
    st = os.stat(paths[1])
    data = paths[1].read_bytes()
    paths[1].write_bytes(data.replace(b"Piece 1", b"Piece X"))  # same size
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))  # rsync -t, touch -d: the ctime still moves
    assert os.stat(paths[1]).st_size == st.st_size and os.stat(paths[1]).st_mtime_ns == st.st_mtime_ns
    time.sleep(0.02)
    opened.clear()
    report = ingest(app)
    assert opened == ["piece-1.md"] and report.changed == ["piece-1"]


def test_a_file_changed_just_before_an_ingest_is_read_again_by_the_next(app, opened):
    """git's racy rule: a file whose times are within RACY_NS of the ingest's start could
    change again within the same timestamp tick; its stamp is not recorded."""
    site(app)
    ingest(app)  # the files are milliseconds old
    assert set(stamps(app).values()) == {None}
    opened.clear()
    again = ingest(app)
    assert len(opened) == 3 and again.unchanged == 3


def test_a_revision_that_did_not_come_from_the_file_makes_it_read_again(app, opened, settled):
    """The stamp names the hash of the revision read from the file: when the article
    holds another one (stored by the desk, or a source), the file is read and compared."""
    site(app)
    ingest(app)
    with app.engine.begin() as conn:
        current = conn.execute(select(articles.c.current_revision_id).where(articles.c.slug == "piece-2")).scalar_one()
        conn.execute(update(revisions).where(revisions.c.id == current).values(content_hash="0" * 64))
    opened.clear()
    report = ingest(app)
    assert opened == ["piece-2.md"] and report.changed == ["piece-2"]


def test_a_deleted_file_put_back_unchanged_is_read_and_its_article_restored(app, opened, settled):
    paths = site(app)
    ingest(app)
    data = paths[0].read_bytes()
    paths[0].unlink()
    assert ingest(app).retracted == ["piece-0"]
    paths[0].write_bytes(data)
    time.sleep(0.02)
    opened.clear()
    report = ingest(app)
    assert opened == ["piece-0.md"] and report.restored == ["piece-0"]
