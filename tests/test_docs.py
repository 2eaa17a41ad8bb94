"""Docs are tested: the README's settings reference is generated from the declarations,
and every command the CLI has is named in the README."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import main
from pipeline.config import settings_markdown

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def block(name: str) -> str:
    return README.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0].strip()


def test_readme_settings_reference_is_current():
    assert block("settings") == settings_markdown().strip(), "run `syndicate config docs --write README.md`"


def test_readme_command_reference_is_current():
    from pipeline.commands.core import commands_markdown

    assert block("commands") == commands_markdown().strip(), "run `syndicate config docs --write README.md`"


def command_paths(cmd=main, path=()):
    for name, sub in getattr(cmd, "commands", {}).items():
        yield path + (name,)
        yield from command_paths(sub, path + (name,))


def test_every_command_is_in_the_readme():
    missing = [" ".join(p) for p in command_paths() if f"syndicate {' '.join(p)}" not in README]
    assert not missing, f"README does not mention: {', '.join('syndicate ' + m for m in missing)}"
