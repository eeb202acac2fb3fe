"""Search queries generated from item texts, checked on every MovieLens movie."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from model_export.data.search_queries import (
    ARTICLES,
    TITLE_FAMILIES,
    ItemText,
    descriptive_query,
    held_out,
    relevance,
    title_queries,
    typo,
)
from model_export.data.sources import movielens_catalogue


@pytest.fixture(scope="module")
def texts(datasets_dir: Path) -> list[str]:
    return [item.text for item in movielens_catalogue(datasets_dir)]


def one_edit(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one letter dropped, doubled or swapped with the next."""
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1 :] == b for i in range(len(a)))
    if len(b) == len(a) + 1:
        return any(a[: i + 1] + a[i] + a[i + 1 :] == b for i in range(len(a)))
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]


def test_every_movie_gets_every_title_family(texts: list[str]) -> None:
    for text in texts:
        queries = title_queries(text)
        assert tuple(queries) == TITLE_FAMILIES and all(queries.values()), text
        assert queries["exact"] == text.partition(" | ")[0].strip()
        assert "(19" not in queries["title"] and not queries["title"].endswith(", The")
        assert queries["bare"].split()[0] not in ARTICLES, text
        assert queries["lower"] == queries["title"].lower()
        assert queries["bare"].lower().startswith(queries["first_words"].lower())
        bare = queries["bare"].lower()
        if any(c.isalpha() for c in bare[1:]):
            assert one_edit(bare, queries["typo"]), (text, queries["typo"])
        else:  # "187": no letter to misspell
            assert queries["typo"] == bare


@pytest.mark.parametrize(
    ("text", "said", "bare"),
    [
        ("Usual Suspects, The (1995) | Crime, Thriller", "The Usual Suspects", "Usual Suspects"),
        ("Postino, Il (1994) | Drama, Romance", "Il Postino", "Postino"),
        (
            "Independence Day (ID4) (1996) | Action, Sci-Fi, War",
            "Independence Day",
            "Independence Day",
        ),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995) | Adventure, Sci-Fi",
            "The City of Lost Children",
            "City of Lost Children",
        ),
        ("A Chef in Love (1996) | Comedy", "A Chef in Love", "Chef in Love"),
        (
            "Land Before Time III: The Time of the Great Giving (1995) (V) | Animation",
            "Land Before Time III: The Time of the Great Giving",
            None,
        ),
        ("Quasar Lighthouse Keepers (1998) | Sci-Fi, Drama", "Quasar Lighthouse Keepers", None),
    ],
)
def test_titles_are_said_as_people_type_them(text: str, said: str, bare: str | None) -> None:
    item = ItemText.parse(text)
    assert (item.spoken, item.bare) == (said, bare or said)


def test_the_same_seed_gives_the_same_queries_and_another_seed_other_typos(
    texts: list[str],
) -> None:
    assert [title_queries(t, seed=3) for t in texts] == [title_queries(t, seed=3) for t in texts]
    changed = sum(title_queries(t, 3)["typo"] != title_queries(t, 4)["typo"] for t in texts)
    assert changed > len(texts) // 2


def test_a_typo_never_touches_the_first_letter() -> None:
    rng = random.Random(0)
    for _ in range(500):
        assert typo("fargo", rng)[0] == "f"
    assert typo("7", rng) == "7"  # nothing to misspell


def test_descriptive_queries_are_fully_relevant_to_their_own_movie(texts: list[str]) -> None:
    made = [(t, descriptive_query(t)) for t in texts]
    described = [(t, q) for t, q in made if q is not None]
    # all but "unknown | unknown" and a movie whose only genre is "unknown"
    assert len(described) == len(texts) - 2
    for text, query in described:
        assert relevance(query, text) == 2, (text, query)
        assert query.text.split()[0].endswith("s")  # a decade first: "90s", "1920s"
    fargo = next(q for t, q in described if t.startswith("Fargo (1996)"))
    for text in texts:
        item = ItemText.parse(text)
        graded = relevance(fargo, text)
        if not set(fargo.genres) <= set(item.genres):
            assert graded == 0
        else:
            assert graded == (2 if item.year is not None and item.year // 10 == 199 else 1)


def test_the_held_out_items_are_a_stable_share() -> None:
    ids = [str(i) for i in range(1, 1683)]
    out = [i for i in ids if held_out(i, 0.1)]
    assert 0.07 * len(ids) < len(out) < 0.13 * len(ids)
    assert out == [i for i in ids if held_out(i, 0.1)]
    assert set(out) <= {i for i in ids if held_out(i, 0.2)}  # a larger share contains it
