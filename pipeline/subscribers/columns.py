"""What an import's header line says: which column holds what, and which columns say
that a person is *not* subscribed (IMP-7).

An import reads our own columns (`email,name,frequency,topics,timezone`), and also the
files people bring when they move a list here: our own `subscribers export`, listmonk's
subscriber export, Ghost's member export and Mailchimp's audience exports. Those files
hold people who withdrew their consent there, marked by a column an import that reads
only `email` and `name` would pass over, subscribing them again (with `--confirmed`) or
mailing them a confirmation they did not ask for. So:

- **Addresses and names**: `Email Address` (Mailchimp), `email_address` and `e-mail`
  stand for `email` when there is no `email` column; `First Name` and `Last Name`
  (Mailchimp; also `first_name`, `last_name`) make the `name` when there is no `name`.
- **Who is not subscribed there**: a row is skipped, and reported with the column and
  its value, when its `state` or `status` (ours, listmonk's) is one of
  `NOT_SUBSCRIBED`, its `subscribed_to_emails` or `subscribed` (Ghost) is false, or it
  has a time in `unsubscribed_at` (ours), `deleted_at` (Ghost), `UNSUB_TIME` or
  `CLEAN_TIME` (Mailchimp's unsubscribed and cleaned exports). A row whose state is
  `unconfirmed` or `pending` never confirmed: imported with `--confirmed` it is skipped
  (the file says consent was not confirmed); without, it gets a confirmation email like
  every new row. A value these columns do not take (`state: maybe`) makes the row bad,
  never subscribed: a file whose `State` column holds regions ("CA") is refused row by
  row, with the advice to rename that column.
- **Everything else** (ids, notes, labels, tags, dates) is read by no rule: the report
  names those columns, so nobody believes they were imported.

Header names are compared stripped and in lower case. The header line also says how
the file is separated: commas, else semicolons (a spreadsheet's "CSV" in locales whose
decimal mark is the comma), else tabs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

OWN = ("email", "name", "frequency", "topics", "timezone")

EMAIL_ALIASES = ("email address", "email_address", "e-mail", "e-mail address")
FIRST_NAME = ("first name", "first_name", "firstname")
LAST_NAME = ("last name", "last_name", "lastname")

SUBSCRIBED = frozenset({"", "confirmed", "subscribed", "enabled", "active"})
UNCONFIRMED = frozenset({"unconfirmed", "pending"})
NOT_SUBSCRIBED = frozenset(
    {"unsubscribed", "suppressed", "blocklisted", "blacklisted", "disabled", "cleaned", "bounced", "complained"}
)
STATE_COLUMNS = ("state", "status")
FLAG_COLUMNS = ("subscribed_to_emails", "subscribed")  # Ghost's member export: true / false
TRUE = frozenset({"true", "yes", "1", "y", "t"})
FALSE = frozenset({"false", "no", "0", "n", "f"})
WHEN_COLUMNS = ("unsubscribed_at", "deleted_at", "unsub_time", "clean_time")


class Verdict:
    """What a consent column says about a row it does not let through."""

    SKIP = "skipped"  # not subscribed there: left out
    BAD = "bad"  # a value the column does not take


Rule = Callable[[str, bool], tuple[str, str] | None]  # (cell, --confirmed) -> (verdict, why) or None


def _state_rule(column: str) -> Rule:
    def rule(cell: str, confirmed: bool) -> tuple[str, str] | None:
        value = cell.strip().lower()
        if value in SUBSCRIBED:
            return None
        if value in NOT_SUBSCRIBED:
            return Verdict.SKIP, f"{column} is {value!r} in the file: not subscribed there, left out"
        if value in UNCONFIRMED:
            if confirmed:
                return (
                    Verdict.SKIP,
                    f"{column} is {value!r} in the file: never confirmed, so not imported as confirmed "
                    "(import such rows without --confirmed to send them a confirmation)",
                )
            return None
        known = ", ".join(sorted(SUBSCRIBED - {""} | UNCONFIRMED | NOT_SUBSCRIBED))
        return (
            Verdict.BAD,
            f"{column} {cell.strip()!r} is not a state this import knows ({known}); if the column holds "
            f"something else (a region, say), rename it in the header line",
        )

    return rule


def _flag_rule(column: str) -> Rule:
    def rule(cell: str, confirmed: bool) -> tuple[str, str] | None:
        value = cell.strip().lower()
        if value == "" or value in TRUE:
            return None
        if value in FALSE:
            return Verdict.SKIP, f"{column} is {value!r} in the file: not subscribed there, left out"
        return Verdict.BAD, f"{column} {cell.strip()!r} is neither true nor false"

    return rule


def _when_rule(column: str) -> Rule:
    def rule(cell: str, confirmed: bool) -> tuple[str, str] | None:
        value = cell.strip()
        if not value:
            return None
        return Verdict.SKIP, f"{column} is {value!r} in the file: not subscribed there, left out"

    return rule


@dataclasses.dataclass
class Columns:
    """The header line, read: `index` (our column -> its position), the positions of
    the first and last names when they make the name, the consent rules by position,
    and the columns nothing reads."""

    index: dict[str, int]
    name_parts: tuple[int, ...]
    rules: list[tuple[int, str, Rule]]
    ignored: list[str]

    @property
    def consent(self) -> list[str]:
        """The consent columns read (header names as in the file)."""
        return [column for _i, column, _rule in self.rules]

    def name(self, record: Sequence[str]) -> str:
        """The name made of the first and last names (used when the file has no name column)."""
        return " ".join(p for p in (record[i].strip() if i < len(record) else "" for i in self.name_parts) if p)

    def verdict(self, record: Sequence[str], confirmed: bool) -> tuple[str, str, str] | None:
        """(verdict, column, why) of the first consent column that leaves this row out, or None."""
        for i, column, rule in self.rules:
            said = rule(record[i] if i < len(record) else "", confirmed)
            if said is not None:
                return said[0], column, said[1]
        return None


def header_delimiter(line: str) -> str:
    """The separator of a CSV file, from its header line: a comma, else a semicolon (what
    a spreadsheet writes as "CSV" where the comma is the decimal mark), else a tab."""
    for candidate in (",", ";", "\t"):
        if candidate in line:
            return candidate
    return ","


def read_header(header: Sequence[str]) -> Columns:
    fields = [f.strip().lower() for f in header]
    names = {f: i for i, f in reversed(list(enumerate(fields)))}  # the first column of a name wins
    index = {name: names[name] for name in OWN if name in names}
    if "email" not in index:
        alias = next((a for a in EMAIL_ALIASES if a in names), None)
        if alias is not None:
            index["email"] = names[alias]
    parts = _name_parts(names) if "name" not in index else ()
    rules: list[tuple[int, str, Rule]] = []
    for columns, make in ((STATE_COLUMNS, _state_rule), (FLAG_COLUMNS, _flag_rule), (WHEN_COLUMNS, _when_rule)):
        for column in columns:
            if column in names:
                shown = header[names[column]].strip()
                rules.append((names[column], shown, make(shown)))
    used = set(index.values()) | set(parts) | {i for i, _c, _r in rules}
    ignored = [header[i].strip() for i in range(len(header)) if i not in used and header[i].strip()]
    return Columns(index, parts, rules, ignored)


def _name_parts(names: dict[str, int]) -> tuple[int, ...]:
    first = next((names[n] for n in FIRST_NAME if n in names), None)
    last = next((names[n] for n in LAST_NAME if n in names), None)
    return tuple(i for i in (first, last) if i is not None)


__all__ = ["Columns", "read_header", "header_delimiter", "Verdict", "OWN", "NOT_SUBSCRIBED", "UNCONFIRMED"]
