"""Docs are tested: the settings and command references in docs/ are generated from the
declarations, every command the CLI has is named in the docs, every rule id the code and
tests cite is explained in docs/standards.md, the examples in the README and docs/ name
commands and options that exist and settings that are declared, the DKIM and backup
procedures work as written, and `mkdocs build --strict` passes."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from pipeline.cli import main
from pipeline.config import SETTINGS, settings_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))}
REGENERATE = "run `syndicate config docs --write docs/configuration.md --write docs/commands.md` (or `make docs`)"

# Rule-id families of the standards checklist (STANDARDS.md); SHA-1 or UTF-8 are not ids.
RULE_ID = re.compile(
    r"\b(?:RSS|ATOM|JF|PAGE|WS|HTTP|DISC|VAL|FG|MSG|LIST|BULK|SIZE|CSS|PRE|IMG|TPL|DKIM|SMTP|BNC|DOI|GDPR|UNS|CAN"
    r"|SW|IDEM|MP|CANON|SAN|SCHED|EVT|RPT|CLK|WEL|SEED|API|IMP|ING|CYC|TEST|FILE)-\d+\b"
)


def block(doc: str, name: str) -> str:
    return doc.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0].strip()


def test_settings_reference_is_current():
    assert block(PAGES["configuration.md"], "settings") == settings_markdown().strip(), REGENERATE


def test_command_reference_is_current():
    from pipeline.commands.core import commands_markdown

    assert block(PAGES["commands.md"], "commands") == commands_markdown().strip(), REGENERATE


def command_paths(cmd=main, path=()):
    for name, sub in getattr(cmd, "commands", {}).items():
        yield path + (name,)
        yield from command_paths(sub, path + (name,))


def test_every_command_is_in_the_docs():
    text = "\n".join(PAGES.values())
    missing = [" ".join(p) for p in command_paths() if f"syndicate {' '.join(p)}" not in text]
    assert not missing, f"docs/ does not mention: {', '.join('syndicate ' + m for m in missing)}"


def test_every_setting_is_in_the_docs():
    missing = [f"{s.section}.{s.key}" for s in SETTINGS if f"`{s.section}.{s.key}`" not in PAGES["configuration.md"]]
    assert not missing, f"docs/configuration.md does not list: {', '.join(missing)}; {REGENERATE}"


def test_config_docs_writes_only_the_blocks_a_page_holds(tmp_path):
    """`--write` may be repeated; each page gets the blocks it holds, and a page with
    none is an error (not silently left alone)."""
    from click.testing import CliRunner

    settings_page = tmp_path / "configuration.md"
    settings_page.write_text("# C\n<!-- settings:start -->\nold\n<!-- settings:end -->\ntail\n", encoding="utf-8")
    commands_page = tmp_path / "commands.md"
    commands_page.write_text("<!-- commands:start -->\n<!-- commands:end -->\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["config", "docs", "--write", str(settings_page), "--write", str(commands_page)])
    assert result.exit_code == 0, result.output
    assert block(settings_page.read_text(encoding="utf-8"), "settings") == settings_markdown().strip()
    assert settings_page.read_text(encoding="utf-8").endswith("tail\n")
    assert "`syndicate worker`" in commands_page.read_text(encoding="utf-8")

    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["config", "docs", "--write", str(plain)])
    assert result.exit_code == 1 and "no generated block" in result.output


# --- standards ------------------------------------------------------------------------


def defined_rule_ids() -> set[str]:
    return {m.upper() for m in re.findall(r'<span id="([a-z]+-\d+)">', PAGES["standards.md"])}


def cited_rule_ids(*roots: Path) -> dict[str, str]:
    cited: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for rule in RULE_ID.findall(path.read_text(encoding="utf-8")):
                cited.setdefault(rule, str(path.relative_to(ROOT)))
    return cited


def test_every_rule_id_the_code_and_tests_cite_is_in_standards_md():
    cited = cited_rule_ids(ROOT / "pipeline", ROOT / "tests", ROOT / "bench")
    assert len(cited) > 50, "the rule-id pattern no longer finds the ids the code cites"
    missing = sorted(set(cited) - defined_rule_ids())
    assert not missing, "docs/standards.md does not define: " + ", ".join(f"{r} (cited in {cited[r]})" for r in missing)


def test_every_rule_id_the_docs_mention_is_defined():
    text = README + "\n".join(text for name, text in PAGES.items() if name != "standards.md")
    missing = sorted(set(RULE_ID.findall(text)) - defined_rule_ids())
    assert not missing, f"docs mention rule ids that docs/standards.md does not define: {', '.join(missing)}"


def test_every_rule_in_standards_md_links_its_source():
    """Each family's table is introduced by a Source line with at least one link."""
    sections = re.split(r"\n### ", PAGES["standards.md"])
    for section in sections:
        if '<span id="' in section:
            head = section.split("| id |", 1)[0]
            assert re.search(r"\]\(https?://", head), f"no source link before the table: {section.splitlines()[0]}"


# --- examples -------------------------------------------------------------------------


def fenced_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.S | re.M) if m.group(1) in languages]


def example_commands() -> list[tuple[str, str]]:
    """Every `syndicate ...` invocation in a shell block of the README or docs/."""
    found = []
    for name, text in [("README.md", README), *PAGES.items()]:
        for code in fenced_blocks(text, ("sh",)):
            for line in code.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|\|\||;|\|(?!\S*\])", line):
                    part = part.strip()
                    part = re.sub(r"^(?:\$ |sudo (?:-u \S+ )?)", "", part).strip()
                    part = re.sub(r"^(?:\S*/)?\.venv/bin/", "", part)
                    if part.startswith("syndicate "):
                        found.append((name, part))
    return found


def check_command_line(line: str) -> str | None:
    """None when the command path and every option exist; values are not judged (the
    examples use placeholders such as SLUG or ID)."""
    tokens = [t.strip("[]") for t in shlex.split(line.rstrip("&").strip(), comments=True)[1:]]
    tokens = [t for t in tokens if t and t not in ("...", "|")]
    cmd: click.Command = main
    path = ["syndicate"]
    while True:
        options = {o: p for p in cmd.params for o in p.opts + p.secondary_opts}
        while tokens and tokens[0].startswith("-"):
            name = tokens.pop(0)
            param = options.get(name.split("=", 1)[0])
            if param is None and name != "--help":
                return f"{' '.join(path)} has no option {name}"
            takes_value = isinstance(param, click.Option) and not (param.is_flag or param.count)
            if takes_value and "=" not in name and tokens:
                tokens.pop(0)
        if not isinstance(cmd, click.Group) or not tokens:
            break
        sub = cmd.get_command(click.Context(cmd), tokens[0])
        if sub is None:
            return f"no command {' '.join(path + [tokens[0]])}"
        path.append(tokens.pop(0))
        cmd = sub
    known = {o for p in cmd.params for o in p.opts + p.secondary_opts} | {"--help"}
    for token in tokens:
        if token.startswith("--") and token.split("=", 1)[0] not in known:
            return f"{' '.join(path)} has no option {token}"
    return None


def test_command_examples_name_real_commands_and_options():
    examples = example_commands()
    assert len(examples) > 40, "the example extractor no longer finds the examples"
    problems = [f"{page}: {line}: {problem}" for page, line in examples if (problem := check_command_line(line))]
    assert not problems, "\n".join(problems)


def test_toml_examples_parse_and_name_declared_settings():
    from pipeline.config import EVENT_ENDPOINT_FIELDS, PARTNER_FIELDS, POLICY_RULE_FIELDS

    declared = {(s.section, s.key) for s in SETTINGS}
    problems = []
    for name, text in [("README.md", README), *PAGES.items()]:
        for code in fenced_blocks(text, ("toml",)):
            try:
                doc = tomllib.loads(code)
            except tomllib.TOMLDecodeError as exc:
                problems.append(f"{name}: {exc}")
                continue
            tables = {
                "partners": (doc.pop("partners", []), PARTNER_FIELDS),
                "policy.rules": (doc.pop("policy", {}).get("rules", []), POLICY_RULE_FIELDS),
                "jobs": (doc.pop("jobs", []), None),
                "events.endpoints": (doc.pop("events", {}).get("endpoints", []), EVENT_ENDPOINT_FIELDS),
            }
            for table, (rows, fields) in tables.items():
                problems += [
                    f"{name}: [[{table}]] {key} is not a field"
                    for row in rows
                    if fields
                    for key in row
                    if key not in fields
                ]
            for section, values in doc.items():
                if isinstance(values, dict):
                    problems += [
                        f"{name}: [{section}] {key} is not a setting"
                        for key in values
                        if (section, key) not in declared
                    ]
    assert not problems, "\n".join(problems)


def test_setting_names_in_the_docs_are_declared():
    """`section.key` in backticks, for a section that exists, must be a declared setting
    (a renamed setting would otherwise leave stale prose behind)."""
    from pipeline.store.schema import metadata

    declared = {f"{s.section}.{s.key}" for s in SETTINGS}
    declared |= {f"{table.name}.{column.name}" for table in metadata.tables.values() for column in table.columns}
    sections = {s.section for s in SETTINGS}
    text = README + "\n".join(PAGES.values())
    stale = sorted(
        {m for m in re.findall(r"`([a-z_]+\.[a-z_]+)`", text) if m.split(".")[0] in sections and m not in declared}
    )
    assert not stale, f"docs name settings that do not exist: {', '.join(stale)}"


def marked_block(page: str, mark: str) -> str:
    text = PAGES[page]
    after = text.split(f"<!-- test: {mark} -->", 1)[1]
    return fenced_blocks(after, ("sh",))[0]


@pytest.mark.skipif(shutil.which("openssl") is None and not os.environ.get("CI"), reason="openssl is not installed")
def test_dkim_key_and_dns_record_as_documented_verify(tmp_path):
    """DKIM-1, DKIM-2: the commands in docs/delivery.md make a key and print a TXT record
    that verifies a message our signer signed with that key."""
    import dkim

    from pipeline.delivery.email.dkim import DkimSigner

    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", marked_block("delivery.md", "dkim-keygen")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    record = out.stdout.strip().splitlines()[-1]
    assert record.startswith("v=DKIM1; k=rsa; p=MII")
    message = (
        b"From: Journal <digest@journal.example.com>\r\nTo: ana@example.com\r\nSubject: Hello\r\n"
        b"Date: Mon, 23 Nov 2026 07:00:00 +0000\r\nMessage-ID: <1@journal.example.com>\r\n\r\nHi.\r\n"
    )
    signed = DkimSigner("s1", "journal.example.com", (tmp_path / "dkim-s1.pem").read_bytes()).sign(message)

    def dns(name, timeout=5):
        assert name == b"s1._domainkey.journal.example.com."
        return record.encode()

    assert dkim.verify(signed, dnsfunc=dns)
    assert b"a=rsa-sha256" in signed


def test_sqlite_online_backup_as_documented(tmp_path):
    """docs/backups.md: the documented command copies a live WAL database consistently."""
    from sqlalchemy import text

    from pipeline.store import current_revision, get_engine

    (tmp_path / "var").mkdir()
    engine = get_engine(f"sqlite:///{tmp_path / 'var' / 'syndicate.db'}")
    revision = current_revision(engine)
    with engine.begin() as conn:  # a connection holding the WAL open while the backup runs
        conn.execute(text("CREATE TABLE IF NOT EXISTS backup_probe (x INTEGER)"))
        conn.execute(text("INSERT INTO backup_probe VALUES (42)"))
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", marked_block("backups.md", "sqlite-backup")],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    copies = list((tmp_path / "backups").glob("syndicate-*.db"))
    assert len(copies) == 1
    copy = get_engine(f"sqlite:///{copies[0]}", migrate=False)
    assert current_revision(copy) == revision
    with copy.connect() as conn:
        assert conn.execute(text("SELECT x FROM backup_probe")).scalar() == 42
    engine.dispose()
    copy.dispose()


# --- the README and the site ----------------------------------------------------------


def test_readme_is_short_and_starts_with_the_two_commands():
    assert len(README.splitlines()) < 300
    first_block = fenced_blocks(README, ("sh",))[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make run", "make test"]


def test_readme_links_point_at_docs_pages():
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing pages: {missing}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [name for name in PAGES if f": {name}" not in nav]
    assert not missing, f"mkdocs.yml nav does not list: {missing}"


def test_mkdocs_build_strict(tmp_path):
    """A broken link or anchor, or a Markdown problem MkDocs warns about, fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "standards.html").exists()


def test_schedule_examples_load_as_written():
    """A `[[jobs]]` example in the docs is a valid schedule file (SCHED-1: the loader
    checks triggers, stages and grace times)."""
    from pipeline.ops.schedules import parse_schedule, resolve_stage

    examples = [code for text in PAGES.values() for code in fenced_blocks(text, ("toml",)) if "[[jobs]]" in code]
    assert examples
    for code in examples:
        for job in parse_schedule(code, "docs example"):
            resolve_stage(job.stage)


def test_ci_lints_then_runs_the_readme_test_command():
    """.ci/run: ruff check, ruff format --check and mypy before `make test`, the README's
    second set-up command, exactly."""
    steps = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    readme_test = fenced_blocks(README, ("sh",))[0].strip().splitlines()[1].split("#")[0].strip()
    assert steps[-1] == readme_test == "make test"
    order = [
        next(i for i, s in enumerate(steps) if s.endswith(tool))
        for tool in ("ruff check pipeline tests bench", "ruff format --check pipeline tests bench", "mypy")
    ]
    assert order == sorted(order) and order[-1] < len(steps) - 1
