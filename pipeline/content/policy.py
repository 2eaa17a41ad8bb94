"""The editorial policy check: which site rules a revision trips, and where.

A rule (`[[policy.rules]]`, defaults in `pipeline.config.DEFAULT_POLICY_RULES`) has
`phrases` that flag a revision and an `allow` list of phrases that do not. Matching is
on words, never on substrings of markup:

- the text is what a reader sees: the plain text of the sanitised body, derived with
  a real HTML parser (`sanitize.html_to_text`), where block boundaries separate words,
  so `<td>vote</td><td>for</td>` reads "vote for", and `<b>vo</b>te` reads "vote";
- words are compared case-insensitively after Unicode compatibility folding (a
  full-width "ｖｏｔｅ" is "vote") with invisible format characters (soft hyphens,
  zero-width spaces, bidi controls) removed, so they cannot split a word;
- a phrase is a sequence of words; a word ending in `*` matches every word it starts
  (`politic*`: politics, political, politician); `left-wing` is the words left, wing;
- a flag lists the words found (folded: "election", "vote for"), not the phrase that
  found them;
- a match that lies inside a match of an `allow` phrase does not count: `government`
  flags, `government grant` (allowed) does not, so "a government grant for a school
  garden" passes while "the government's new legislation" is flagged.

Each field (title, summary, tags, body, ...) is matched on its own: a phrase never
spans two fields. A flag names the rule, the phrases found and a short excerpt of
each, so an editor sees why without opening the article.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from typing import Iterable

from pipeline.content.sanitize import html_to_text

WORD = re.compile(r"\w+")
EXCERPT_WORDS = 6  # words of context on each side of a match
MAX_EXCERPTS = 3  # per rule


def _fold(word: str) -> list[str]:
    """A word as compared: compatibility-folded, case-folded (which may split it)."""
    return WORD.findall(unicodedata.normalize("NFKC", word).casefold())


def _visible(text: str) -> str:
    """Remove format characters (Unicode category Cf: soft hyphen, zero-width space,
    joiners, bidi controls): invisible to a reader, they must not split a word."""
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


class Phrase:
    """One phrase of a rule, compiled to a regular expression over a field's folded
    words joined by single spaces (matching runs in C, not word by word in Python)."""

    def __init__(self, phrase: str):
        self.text = phrase
        parts = []
        for raw in phrase.split():
            words = _fold(raw.rstrip("*"))
            parts.extend(re.escape(w) for w in words)
            if raw.endswith("*") and words:
                parts[-1] += r"\w*"
        self.pattern = re.compile(r"(?<!\S)" + " ".join(parts) + r"(?!\S)") if parts else None

    def spans(self, field: "Text") -> Iterable[tuple[int, int]]:
        """(first word, last word + 1) of every match in `field`."""
        if self.pattern is None:
            return
        for m in self.pattern.finditer(field.joined):
            yield field.word_at(m.start()), field.word_at(m.end() - 1) + 1


class Text:
    """A field's words, folded and joined by spaces, with each word's place in the
    field's visible text (for excerpts)."""

    def __init__(self, text: str):
        self.text = _visible(text)
        self.offsets: list[tuple[int, int]] = []  # word -> (start, end) in self.text
        self.starts: list[int] = []  # word -> start in self.joined
        self.words: list[str] = []
        folded = self.words
        pos = 0
        for m in WORD.finditer(self.text):
            for w in _fold(m.group()):
                self.offsets.append((m.start(), m.end()))
                self.starts.append(pos)
                folded.append(w)
                pos += len(w) + 1
        self.joined = " ".join(folded)

    def word_at(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos) - 1

    def excerpt(self, start: int, end: int) -> str:
        lo = max(0, start - EXCERPT_WORDS)
        hi = min(len(self.starts), end + EXCERPT_WORDS)
        snippet = " ".join(self.text[self.offsets[lo][0]:self.offsets[hi - 1][1]].split())
        return ("…" if lo > 0 else "") + snippet + ("…" if hi < len(self.starts) else "")


class Rule:
    def __init__(self, rule: dict):
        self.name = rule["name"]
        self.action = rule.get("action", "flag")
        self.description = rule.get("description", "")
        self.phrases = [Phrase(p) for p in rule.get("phrases", [])]
        self.allow = [Phrase(p) for p in rule.get("allow", [])]

    def check(self, fields: list[Text]) -> dict | None:
        """The flag for these fields, or None; matches in the order they appear."""
        found: dict[str, tuple[int, int, str]] = {}  # words -> (field, word, excerpt) of the first
        for n, field in enumerate(fields):
            if not field.joined:
                continue
            allowed = [span for phrase in self.allow for span in phrase.spans(field)]
            for phrase in self.phrases:
                for start, end in phrase.spans(field):
                    if any(a <= start and end <= b for a, b in allowed):
                        continue
                    words = " ".join(field.words[start:end])
                    if words not in found or found[words][:2] > (n, start):
                        found[words] = (n, start, field.excerpt(start, end))
        if not found:
            return None
        ordered = sorted(found.items(), key=lambda item: item[1][:2])
        excerpts = list(dict.fromkeys(excerpt for _, (_, _, excerpt) in ordered))[:MAX_EXCERPTS]
        return {"rule": self.name, "action": self.action, "description": self.description,
                "matches": [words for words, _ in ordered], "excerpts": excerpts}


def article_fields(article) -> list[Text]:
    """What a reader of the article sees, field by field."""
    values = [article.title, article.summary, getattr(article, "image_alt", ""),
              getattr(article, "category", ""), " ".join(getattr(article, "tags", []) or []),
              html_to_text(article.body_html)]
    return [Text(v or "") for v in values]


def _compiled(rules: list[dict]) -> list[Rule]:
    """Rules compiled once per rule set (ingest checks thousands of revisions with one)."""
    return _compile(tuple((r["name"], r.get("action", "flag"), r.get("description", ""),
                           tuple(r.get("phrases", [])), tuple(r.get("allow", []))) for r in rules))


@functools.lru_cache(maxsize=8)
def _compile(key: tuple) -> list[Rule]:
    return [Rule({"name": name, "action": action, "description": description, "phrases": phrases,
                  "allow": allow}) for name, action, description, phrases, allow in key]


def policy_flags(rules: list[dict], article) -> list[dict]:
    """The rules a revision trips: [{rule, action, description, matches, excerpts}]."""
    fields = article_fields(article)
    flags = []
    for rule in _compiled(rules):
        flag = rule.check(fields)
        if flag:
            flags.append(flag)
    return flags


def blocking(flags: list[dict]) -> list[dict]:
    """The flags that stop an approval without --override."""
    return [f for f in flags or [] if f.get("action", "flag") == "flag"]


__all__ = ["policy_flags", "blocking", "Phrase", "Rule"]
