"""Staged writes: many files, one sync, no half files (FILE-1, FILE-2)."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline import files
from pipeline.files import StagedWrites, write_temporary


def test_nothing_is_renamed_before_the_one_sync_file2(tmp_path, monkeypatch):
    """FILE-2: every staged file is still only a temporary file when the file system
    is synced (once), and every target has its new bytes after publish()."""
    (tmp_path / "old.html").write_bytes(b"old")
    seen = []

    def sync(path):
        seen.append(sorted(p.name for p in tmp_path.rglob("*") if p.is_file()))

    monkeypatch.setattr(files, "sync_filesystem", sync)
    with StagedWrites(tmp_path) as staged:
        staged.stage(tmp_path / "old.html", b"new")
        staged.stage(tmp_path / "a" / "b.xml", b"<b/>")
        assert (tmp_path / "old.html").read_bytes() == b"old"  # not yet
        assert staged.publish() == 2
    assert len(seen) == 1
    assert "old.html" in seen[0] and "b.xml" not in seen[0]  # synced before any rename
    assert (tmp_path / "old.html").read_bytes() == b"new"
    assert (tmp_path / "a" / "b.xml").read_bytes() == b"<b/>"
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b.xml").st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.xml", "old.html"]


def test_an_error_before_publish_leaves_every_target_and_no_temporary_file_file2(tmp_path):
    """FILE-2: leaving the block on an error removes the temporary files; targets keep
    their old bytes."""
    (tmp_path / "page.html").write_bytes(b"old")
    with pytest.raises(RuntimeError), StagedWrites(tmp_path) as staged:
        staged.stage(tmp_path / "page.html", b"new")
        raise RuntimeError("render failed")
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]
    assert (tmp_path / "page.html").read_bytes() == b"old"


def test_a_worker_temporary_file_is_adopted_and_published_file2(tmp_path):
    """FILE-2: a temporary file made elsewhere (a forked build worker) is published by
    the parent; the real syncfs runs."""
    tmp = write_temporary(tmp_path / "feeds" / "all.atom", b"<feed/>")
    assert os.path.dirname(tmp) == str(tmp_path / "feeds") and not (tmp_path / "feeds" / "all.atom").exists()
    staged = StagedWrites(tmp_path)
    staged.adopt(tmp, tmp_path / "feeds" / "all.atom")
    assert len(staged) == 1 and staged.publish() == 1 and len(staged) == 0
    assert (tmp_path / "feeds" / "all.atom").read_bytes() == b"<feed/>"
    assert os.listdir(tmp_path / "feeds") == ["all.atom"]


def test_a_build_renames_only_after_its_last_sync_and_leaves_no_temporary_file_file2(make_app, sqlite_url, monkeypatch):
    """FILE-2 in the build: every rename comes after the last sync of public/ (the
    build may also sync while forked workers still write feed documents, so that the
    last sync has less to flush), no rename for a build whose bytes are all unchanged,
    and no temporary file left in public/."""
    import threading

    import pipeline.site.build as build_module

    from .feedsite import add_articles, public
    from .feedsite import publish as approve

    if threading.active_count() > 1:
        pytest.skip("worker processes are only used from a single-threaded process")
    events = []
    real_sync, real_replace = files.sync_filesystem, os.replace

    def replace(src, dst, **kwargs):
        events.append("rename")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(files, "sync_filesystem", lambda path: (events.append(path), real_sync(path)))
    monkeypatch.setattr(files.os, "replace", replace)
    monkeypatch.setattr(build_module, "PARALLEL_MIN_JOBS", 4)
    app = make_app(sqlite_url, "\n[feeds]\nbuild_processes = 2\n")
    add_articles(app, 6)
    approve(app)
    events.clear()  # only the build's own syncs and renames
    report = build_module.build(app)
    assert len(report.written) > 20 and not report.errors
    syncs = [i for i, e in enumerate(events) if e != "rename"]
    renames = [i for i, e in enumerate(events) if e == "rename"]
    assert syncs and {events[i] for i in syncs} == {public(app)}
    assert len(renames) >= len(report.written) and min(renames) > max(syncs)  # none before the last sync
    assert not [p for p in public(app).rglob("*") if p.name.endswith(".tmp")]
    events.clear()
    assert build_module.build(app, force=True).written == [] and "rename" not in events  # nothing replaced
