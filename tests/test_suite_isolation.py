"""The suite runs in parallel (pytest-xdist, `make test`): what keeps two workers and
two tests from seeing each other (TEST-1), and which tests must never run at the same
time (TEST-2)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import settings

from tests.conftest import REPO

PROBE = "SYNDICATE_TEST_LEAK_PROBE"


def test_the_callers_terminal_and_syndicate_settings_do_not_reach_the_tests():
    """TEST-1: a terminal's COLUMNS would re-wrap rich tables; a SYNDICATE_* variable
    would override every test project's syndicate.toml."""
    leaked = [n for n in os.environ if n in ("COLUMNS", "LINES", "TZ") or n.startswith("SYNDICATE_")]
    assert [n for n in leaked if n != "SYNDICATE_TEST_PG"] == []


@pytest.mark.xdist_group("isolation-probe")
def test_a_variable_a_test_sets_is_there_while_it_runs():
    os.environ[PROBE] = "set by a test"  # not undone here on purpose: the fixture must
    assert os.environ[PROBE] == "set by a test"


@pytest.mark.xdist_group("isolation-probe")
def test_the_next_test_on_the_worker_does_not_see_it():
    """TEST-1: runs after the test above on the same worker (one group, in order)."""
    assert PROBE not in os.environ


def test_hypothesis_keeps_its_examples_outside_the_repository_per_worker():
    """TEST-1: no .hypothesis/ folder shared by the workers inside the repository."""
    path = Path(settings.default.database.path)  # type: ignore[union-attr]
    assert REPO not in path.parents
    assert path.name.endswith(os.environ.get("PYTEST_XDIST_WORKER", "main"))


def _is_process_test(text: str) -> bool:
    return "subprocess.Popen(" in text and bool(re.search(r"\.kill\(|send_signal|SIGKILL|SIGTERM", text))


def test_every_test_module_that_starts_and_kills_processes_is_in_a_serial_group():
    """TEST-2: a module that starts processes and kills or signals them runs its tests
    in the "processes" group (or "browser" for Chromium), one at a time."""
    loose = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        if _is_process_test(text) and not re.search(r'xdist_group\("(processes|browser)"\)', text):
            loose.append(path.name)
    assert loose == []
    assert _is_process_test("p = subprocess.Popen(cmd)\np.send_signal(signal.SIGTERM)\n")


def test_make_test_runs_the_suite_in_workers_with_the_groups_kept_together():
    """TEST-2: `--dist loadgroup` is what makes an xdist_group mean "one at a time"."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "TEST_WORKERS ?= 2" in makefile
    assert "-n $(TEST_WORKERS) --dist loadgroup" in makefile
