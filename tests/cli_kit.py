"""Reading the CLI's rich tables in tests."""

from __future__ import annotations


def first_column(output: str) -> str:
    """The first column of a rich table's body, its cells' lines joined: what a person
    reads down that column (a folded cell continues on the next line)."""
    return "".join(line.split("│")[1].strip() for line in output.splitlines() if line.startswith("│"))
