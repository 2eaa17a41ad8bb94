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
from collections.abc import Iterable

from pipeline.content.sanitize import html_to_text

WORD = re.compile(r"\w+")
EXCERPT_WORDS = 6  # words of context on each side of a match
MAX_EXCERPTS = 3  # per rule


# Format characters (Unicode category Cf: soft hyphen, zero-width space and joiners, bidi
# controls, tags...): invisible to a reader, they must not split a word. Listed as ranges
# so removing them is one regex pass; a test checks the list against unicodedata.
FORMAT_CHARS = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


# Byte -> itself lower-cased when it is a word character (\w on ASCII), else a space.
_ASCII_WORD_BYTES = bytes(
    (ord(chr(b).lower()) if re.fullmatch(r"\w", chr(b)) else 0x20) if b < 128 else 0x20 for b in range(256)
)


def _fold(text: str) -> list[str]:
    """Words as compared: compatibility-folded (full-width "ｖｏｔｅ" is "vote"), case-folded."""
    return WORD.findall(unicodedata.normalize("NFKC", text).casefold())


class Phrase:
    """One phrase of a rule, compiled to a regular expression over a field's folded
    words joined by single spaces (matching runs in C, not word by word in Python)."""

    def __init__(self, phrase: str):
        self.text = phrase
        words: list[tuple[str, bool]] = []  # (folded word, matches as a prefix)
        for raw in phrase.split():
            folded = _fold(raw.rstrip("*"))
            words.extend((w, raw.endswith("*") and i == len(folded) - 1) for i, w in enumerate(folded))
        parts = [re.escape(w) + (r"\w*" if prefix else "") for w, prefix in words]
        self.pattern = re.compile(r"(?<!\S)" + " ".join(parts) + r"(?!\S)") if parts else None
        self.first, self.first_is_prefix = words[0] if words else ("", False)

    def spans(self, field: Text) -> Iterable[tuple[int, int]]:
        """(first word, last word + 1) of every match in `field`."""
        if self.pattern is None or not field.may_start(self.first, self.first_is_prefix):
            return
        for m in self.pattern.finditer(field.joined):
            yield field.word_at(m.start()), field.word_at(m.end() - 1) + 1


class Text:
    """A field's words, folded and joined by spaces. Built with a few C-level passes;
    where each word sits in the text is worked out only for an excerpt (rare)."""

    def __init__(self, text: str):
        if text.isascii():
            # The same words, cheaper: ASCII has no format characters and nothing for NFKC
            # to fold, casefold() is lower(), and \w is [A-Za-z0-9_], so the words joined
            # by spaces are the text with every other byte made a space, split and joined.
            self.text = text
            self.joined = b" ".join(text.encode("ascii").translate(_ASCII_WORD_BYTES).split()).decode("ascii")
        else:
            self.text = unicodedata.normalize("NFKC", FORMAT_CHARS.sub("", text))
            self.joined = " ".join(WORD.findall(self.text)).casefold()
        self._vocab: list[str] | None = None
        self._offsets: list[tuple[int, int]] | None = None

    @functools.cached_property
    def words(self) -> list[str]:
        return self.joined.split(" ") if self.joined else []

    def may_start(self, word: str, prefix: bool) -> bool:
        """Whether any word is (or, for a prefix, starts with) `word`: most phrases of a
        rule are not in most articles, and this skips their scan. A word that is not even
        a substring of the joined text is answered by one C-level search, before the
        sorted vocabulary (a sort of every word of the body) is built (ING-3)."""
        if word not in self.joined:
            return False
        if self._vocab is None:
            self._vocab = sorted(set(self.words))
        i = bisect.bisect_left(self._vocab, word)
        if i == len(self._vocab):
            return False
        return self._vocab[i].startswith(word) if prefix else self._vocab[i] == word

    def word_at(self, pos: int) -> int:
        return self.joined.count(" ", 0, pos)

    def excerpt(self, start: int, end: int) -> str:
        if self._offsets is None:
            self._offsets = [m.span() for m in WORD.finditer(self.text)]
        count = len(self._offsets)
        lo, hi = max(0, start - EXCERPT_WORDS), min(count, end + EXCERPT_WORDS)
        snippet = " ".join(self.text[self._offsets[lo][0] : self._offsets[hi - 1][1]].split())
        return ("…" if lo > 0 else "") + snippet + ("…" if hi < count else "")


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
        return {
            "rule": self.name,
            "action": self.action,
            "description": self.description,
            "matches": [words for words, _ in ordered],
            "excerpts": excerpts,
        }


def article_fields(article) -> list[Text]:
    """What a reader of the article sees, field by field. `body_text`, when the article
    carries it (ingest derives it once), saves parsing the body again."""
    body = getattr(article, "body_text", "") or html_to_text(article.body_html)
    values = [
        article.title,
        article.summary,
        getattr(article, "image_alt", ""),
        getattr(article, "category", ""),
        " ".join(getattr(article, "tags", []) or []),
        body,
    ]
    return [Text(v or "") for v in values]


def _compiled(rules: list[dict]) -> list[Rule]:
    """Rules compiled once per rule set (ingest checks thousands of revisions with one)."""
    return _compile(
        tuple(
            (
                r["name"],
                r.get("action", "flag"),
                r.get("description", ""),
                tuple(r.get("phrases", [])),
                tuple(r.get("allow", [])),
            )
            for r in rules
        )
    )


@functools.lru_cache(maxsize=8)
def _compile(key: tuple) -> list[Rule]:
    return [
        Rule({"name": name, "action": action, "description": description, "phrases": phrases, "allow": allow})
        for name, action, description, phrases, allow in key
    ]


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
