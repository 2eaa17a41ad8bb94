"""pipeline.gcpause: collection paused while a build plans, planned objects frozen while
it renders, and the collector always left as it was found (on success and on error)."""

from __future__ import annotations

import gc
import threading

import pytest

from pipeline import gcpause


@pytest.fixture(autouse=True)
def _collector_restored():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def test_a_pause_turns_collection_off_and_back_on():
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_pause_ended_by_an_error_still_turns_collection_back_on():
    with pytest.raises(RuntimeError), gcpause.paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_collection_off_before_a_pause_stays_off_after_it():
    gc.disable()
    with gcpause.paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_in_two_threads_resume_collection_only_when_the_last_ends():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with gcpause.paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with gcpause.paused():
            second_in.set()
            first_out.wait(5)
            seen["after the first ended"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"after the first ended": False}
    assert gc.isenabled()


def test_a_freeze_keeps_live_objects_out_of_collections_until_it_ends():
    kept = [[i] for i in range(1000)]
    with gcpause.frozen():
        assert gc.get_freeze_count() >= len(kept)
    assert gc.get_freeze_count() == 0


def test_a_freeze_ended_by_an_error_still_ends():
    with pytest.raises(RuntimeError), gcpause.frozen():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_a_build_leaves_the_collector_as_it_found_it(make_app, sqlite_url, monkeypatch):
    """The build pauses collection while it plans and freezes the plan while it renders;
    after it, and after one that fails while rendering, collection is on and nothing is
    frozen (a scheduler process runs builds for weeks)."""
    from pipeline.site import build as b
    from pipeline.site import plan

    from .feedsite import add_articles, publish

    app = make_app(sqlite_url)
    add_articles(app, 3)
    publish(app)
    during = []

    def watch(module, name):
        real = getattr(module, name)

        def watching(*args, **kwargs):
            during.append((name, gc.isenabled(), gc.get_freeze_count() > 0))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, watching)

    watch(plan, "load_meta")
    watch(b, "_render_all")
    assert b.build(app).written
    # planning: collection off; rendering: collection on, the plan frozen
    assert during == [("load_meta", False, False), ("_render_all", True, True)]
    assert gc.isenabled() and gc.get_freeze_count() == 0

    def failing(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(b, "_render_all", failing)
    add_articles(app, 1, start=3)
    publish(app)
    with pytest.raises(RuntimeError):
        b.build(app)
    assert gc.isenabled() and gc.get_freeze_count() == 0
