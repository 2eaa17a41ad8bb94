"""Arrows run one way (issue 17 item 1, DESIGN.md "Layout").

Read from the source with `ast`, every `import` counts, including those inside
functions (a lazy import is still a dependency; it only hides the cycle until run
time):

- nothing in a stage package (content, site, subscribers, digests, delivery, partners)
  imports web, ops, commands or cli;
- the stage packages depend on each other only along the data flow, content ->
  site | digests | partners -> delivery, with subscribers between content and the
  stages that mail people; delivery imports no stage (it finds channels, email kinds
  and the suppression hook through entry points), so there is no cycle between them;
- the core modules (config, errors, store, ...) import no stage and nothing above;
- no import cycle between modules at import time (module-level imports);
- no import cycle at all, lazy (function-level) imports included, inside a package
  or across packages (CYC-1): a cycle hidden in a function still means neither module
  can be understood, tested or moved without the other. A cycle that cannot be
  removed yet is listed in KNOWN with the reason, and a KNOWN entry that is no longer
  a cycle fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"

STAGES = {"content", "site", "subscribers", "digests", "delivery", "partners"}
UPPER = {"web", "ops", "commands", "cli", "accounts"}  # accounts: the desk's domain layer
# stage -> the stages it may import (the data flow); anything else is an upward arrow
ALLOWED = {
    "content": set(),
    "subscribers": {"content", "delivery"},
    "site": {"content", "subscribers", "delivery"},
    "digests": {"content", "subscribers", "delivery"},
    "partners": {"content", "delivery"},
    "delivery": set(),
}


# Import cycles we live with for now: the modules of each (a strongly connected
# component of the graph, lazy imports included) -> why it is still there. Empty:
# every cycle found so far was removed (issue 17: editorial/ingest, the SMTP sender
# and its channel, subscriber state and the suppression list, the CLI and its audit
# rows, the source modules and their package, the digest stage and web version, the
# desk and the app that mounts it).
KNOWN: dict[frozenset[str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PIPELINE.rglob("*.py") if "migrations" not in p.parts}


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported pipeline module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, id(node) in top))
    return found


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pipeline"


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, bool]]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_stage_imports_web_ops_commands_or_cli(graph):
    upward = [f"{m} -> {t}" for m, deps in graph.items() for t, _ in deps if area(m) in STAGES and area(t) in UPPER]
    assert upward == []


def test_stage_packages_import_only_along_the_data_flow(graph):
    against = sorted(
        {
            f"{area(m)} -> {area(t)} ({m} imports {t})"
            for m, deps in graph.items()
            for t, _ in deps
            if area(m) in STAGES and area(t) in STAGES and area(t) != area(m) and area(t) not in ALLOWED[area(m)]
        }
    )
    assert against == []


def test_allowed_stage_arrows_have_no_cycle():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in ALLOWED[start])

    assert [s for s in ALLOWED if reaches(s, s, set())] == []


def test_core_modules_import_no_stage_and_nothing_above(graph):
    core = {area(m) for m in graph} - STAGES - UPPER - {"app", "pipeline"}
    wrong = [
        f"{m} -> {t}" for m, deps in graph.items() for t, _ in deps if area(m) in core and area(t) in STAGES | UPPER
    ]
    assert wrong == []


def test_no_import_cycle_at_import_time(graph):
    eager = {m: {t for t, top in deps if top} for m, deps in graph.items()}
    cycles = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for nxt in sorted(eager.get(node, ())):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(eager):
        if start not in done:
            visit(start, [start], done)
    assert cycles == []


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    """The graph must count imports inside functions, or the rules above prove nothing."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from pipeline.web import app\n")
    assert imports("pipeline.delivery.x", path, {"pipeline.web", "pipeline.web.app"}) == [("pipeline.web.app", False)]


def import_cycles(graph: dict[str, list[tuple[str, bool]]]) -> list[frozenset[str]]:
    """Every group of modules that import each other, directly or round a loop (the
    strongly connected components with more than one module, Tarjan's algorithm);
    module-level and function-level imports alike."""
    edges = {m: sorted({t for t, _ in deps}) for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for start in sorted(edges):
            if start not in index:
                visit(start)
    finally:
        sys.setrecursionlimit(limit)
    return found


def describe(cycle: frozenset[str], graph: dict[str, list[tuple[str, bool]]]) -> str:
    arrows = sorted(
        f"{m} -> {t}{'' if top else ' (in a function)'}" for m in cycle for t, top in graph[m] if t in cycle
    )
    return "; ".join(arrows)


def test_no_import_cycle_even_through_lazy_imports(graph):
    """CYC-1: no cycle inside a package or across packages, function-level imports
    included; the ones we cannot remove yet are in KNOWN with a reason."""
    cycles = import_cycles(graph)
    new = [describe(c, graph) for c in cycles if c not in KNOWN]
    assert new == [], "import cycles (break them, or list them in KNOWN with the reason)"


def test_every_known_cycle_is_still_a_cycle(graph):
    """A KNOWN entry that was fixed must leave the list (CYC-1: the list only shrinks)."""
    cycles = set(import_cycles(graph))
    stale = sorted(", ".join(sorted(c)) for c in KNOWN if c not in cycles)
    assert stale == []
    assert all(reason.strip() for reason in KNOWN.values())


def test_the_checker_finds_a_cycle_through_a_lazy_import_inside_a_package(tmp_path):
    """The cycle check must see a loop closed by a function-level import between two
    modules of one package, and nothing where the arrows run one way."""
    pkg = tmp_path / "pipeline" / "stage"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pipeline.stage.b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from pipeline.stage import a\n    return a\n")
    (pkg / "c.py").write_text("from pipeline.stage import a\n")
    known = {"pipeline.stage", "pipeline.stage.a", "pipeline.stage.b", "pipeline.stage.c"}
    files = {"pipeline.stage.a": pkg / "a.py", "pipeline.stage.b": pkg / "b.py", "pipeline.stage.c": pkg / "c.py"}
    small = {name: imports(name, path, known) for name, path in files.items()}
    assert import_cycles(small) == [frozenset({"pipeline.stage.a", "pipeline.stage.b"})]
    assert "pipeline.stage.b -> pipeline.stage.a (in a function)" in describe(import_cycles(small)[0], small)
