"""Search queries as shoppers type them, generated from an item's text.

For training the query side on more than exact titles, and for the search benchmark
(issue 28). An item's text is ``"<title> | <genre>, <genre>"`` (:mod:`model_export.data.sources`);
MovieLens writes titles as ``"Usual Suspects, The (1995)"``. From it, one query per family:

* ``exact``: the title as the catalogue writes it, year included.
* ``title``: the title as it is said: a trailing article put back in front, no year and no
  alternate title in parentheses (``"The Usual Suspects"``; ``"Independence Day"``).
* ``bare``: no year and no leading article (``"Usual Suspects"``).
* ``first_words``: the first word of the bare title, or the first two when the first is
  short (``"Usual"``; ``"Star Wars"``).
* ``typo``: the bare title in lower case with one letter dropped, doubled or swapped with
  its neighbour (never the first letter).
* ``lower``: the spoken title in lower case.

and ``descriptive`` queries built from the catalogue's fields: a decade and one or two
genres (``"90s crime thriller"``), whose graded relevance (:func:`relevance`) is 2 for items
of that decade holding every genre named, 1 for items holding them from another decade, else
0.

Every query is drawn from a random generator seeded per item, so the same seed gives the same
queries. :func:`held_out` splits items by a stable hash: queries for held-out items are never
trained on.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

#: The families of title queries, in the order :func:`title_queries` returns them.
TITLE_FAMILIES = ("exact", "title", "bare", "first_words", "typo", "lower")
#: Articles MovieLens moves behind a title ("Pest, The"; "Cité des enfants perdus, La").
ARTICLES = ("The", "A", "An", "La", "Le", "Les", "L'", "Il", "El", "Das", "Die", "Der")
#: A parenthesised group at the end of a title: the year, an alternate title ("(ID4)") or a
#: format ("(V)"); ``"... (1995) (V)"`` has both.
_TRAILING = re.compile(r"\s*\(([^()]*)\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<article>" + "|".join(ARTICLES) + r")$")
#: Shorthand people type for a genre.
GENRE_WORDS = {"Children's": "kids", "Film-Noir": "film noir", "Sci-Fi": "sci-fi"}


@dataclass(frozen=True, slots=True)
class ItemText:
    """An item's text taken apart: title as written, spoken title, bare title, year, genres."""

    written: str
    spoken: str
    bare: str
    year: int | None
    genres: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> ItemText:
        """Split ``"<title> (<year>) | <genre>, <genre>"``; either part may be missing."""
        written, _, genre_part = text.partition(" | ")
        written = written.strip()
        title, year = written, None
        while (found := _TRAILING.search(title)) and title[: found.start()].strip():
            inner = found.group(1)  # the year, or an alternate title or "(V)": not typed
            if year is None and re.fullmatch(r"\d{4}", inner):
                year = int(inner)
            title = title[: found.start()]
        title = title.strip() or written  # nothing but a year: the text as written
        moved = _TRAILING_ARTICLE.match(title)
        if moved:
            article, bare = moved.group("article"), moved.group("rest")
            spoken = f"{article}{bare}" if article.endswith("'") else f"{article} {bare}"
        else:
            spoken = title
            first, _, rest = title.partition(" ")
            bare = rest if first in ARTICLES and rest else title
        genres = tuple(g.strip() for g in genre_part.split(",") if g.strip())
        return cls(written, spoken.strip(), bare.strip(), year, genres)


def title_queries(text: str, seed: int = 0) -> dict[str, str]:
    """One query of each :data:`TITLE_FAMILIES` for the item with ``text``."""
    item = ItemText.parse(text)
    rng = _rng(seed, text)
    return {
        "exact": item.written,
        "title": item.spoken,
        "bare": item.bare,
        "first_words": first_words(item.bare),
        "typo": typo(item.bare.lower(), rng),
        "lower": item.spoken.lower(),
    }


def first_words(title: str) -> str:
    """The first word, or the first two when the first has at most four letters."""
    words = title.split()
    if len(words) > 1 and len(words[0]) <= 4:
        return " ".join(words[:2])
    return words[0] if words else title


def typo(text: str, rng: random.Random) -> str:
    """``text`` with one letter (not the first) dropped, doubled or swapped with the next."""
    letters = [i for i, c in enumerate(text) if c.isalpha() and i > 0]
    if not letters:
        return text
    at = rng.choice(letters)
    kind = rng.choice(("drop", "double", "swap"))
    if kind == "swap" and at + 1 < len(text) and text[at + 1] != text[at]:
        return text[:at] + text[at + 1] + text[at] + text[at + 2 :]
    if kind == "double":
        return text[: at + 1] + text[at] + text[at + 1 :]
    return text[:at] + text[at + 1 :]


@dataclass(frozen=True, slots=True)
class Descriptive:
    """A query naming a decade and genres, e.g. ``"90s crime thriller"``."""

    text: str
    decade: int
    genres: tuple[str, ...]


def descriptive_query(text: str, seed: int = 0) -> Descriptive | None:
    """A decade-and-genres query describing the item with ``text`` (None without either)."""
    item = ItemText.parse(text)
    genres = [g for g in item.genres if g != "unknown"]
    if item.year is None or not genres:
        return None
    rng = _rng(seed, text)
    chosen = tuple(sorted(rng.sample(genres, min(len(genres), rng.choice((1, 2))))))
    decade = item.year // 10 * 10
    words = [GENRE_WORDS.get(g, g.lower()) for g in chosen]
    return Descriptive(f"{decade_words(decade)} {' '.join(words)}", decade, chosen)


def decade_words(decade: int) -> str:
    """``1990`` as people say it: ``"90s"``; before 1930 the full ``"1920s"``."""
    return f"{decade % 100:02d}s" if decade >= 1930 else f"{decade}s"


def relevance(query: Descriptive, text: str | ItemText) -> int:
    """Graded relevance of the item with ``text`` to ``query``: 2, 1 or 0 (see module)."""
    item = ItemText.parse(text) if isinstance(text, str) else text
    if not set(query.genres) <= set(item.genres):
        return 0
    same_decade = item.year is not None and item.year // 10 * 10 == query.decade
    return 2 if same_decade else 1


def held_out(item_id: str, share: float, salt: str = "search-queries") -> bool:
    """Whether ``item_id`` is in the held-out ``share`` of items (stable across runs)."""
    digest = hashlib.sha256(f"{salt}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _rng(seed: int, text: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 (not a secret)
