"""Search on the real exported model over the whole MovieLens catalogue (1,682 items).

The model is the host's (``STREAMREC_MODEL_DIR``, e.g. the one ``make model`` builds) where
one is set, else the suite's tiny model: the same export, trained for less. Each search goes
the way ``/search/`` and a shop's search event go: the query at the end of the user's
context (:func:`stream.serving.search.searched_context`), then the list the worker's scorer makes.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from model_export.data.sources import movielens_events
from stream.catalogue.items import Catalogue
from stream.contracts.records import CatalogueRecord, Event
from stream.model.scorer import Scorer
from stream.serving.search import searched_context
from stream.settings import Settings
from stream.state.context import ContextLimits, UserContext
from stream.tools.search_eval.lists import loo_cases

LIMITS = ContextLimits.from_settings(Settings(exclude="seen"))
STAR_WARS_FAN = ("172", "181", "174")  # Empire Strikes Back, Return of the Jedi, Raiders
NEW_ITEM = CatalogueRecord("quasar-1", "Quasar Lighthouse Keepers (1998) | Sci-Fi, Drama", ts=0)


def fan() -> UserContext:
    context = None
    for n, item in enumerate(STAR_WARS_FAN):
        context, _ = LIMITS.apply(context, Event(f"c{n}", "fan", "click", 1_000 + n, item))
    assert context is not None
    return context


def first_items(scorer: Scorer, contexts: list[UserContext], query: str, k: int = 10) -> list:
    searched = [searched_context(c, query, 2_000_000, LIMITS) for c in contexts]
    return [[item for item, _ in ranked] for ranked in scorer.score(searched, k)]


@pytest.fixture(scope="module")
def scorer(shipped_model_dir: Path) -> Scorer:
    return Scorer(shipped_model_dir, provider="cpu", exclude="seen")


def unique_titles(scorer: Scorer) -> dict[str, str]:
    """Item id → exact title (text before " | "), for titles no other item shares."""
    manifest = scorer.manifest
    texts = zip(manifest.items, manifest.item_texts, strict=True)
    titles = {i: t.split(" | ")[0] for i, t in texts}
    counts = Counter(titles.values())
    return {i: t for i, t in titles.items() if counts[t] == 1 and i not in STAR_WARS_FAN}


def test_an_exact_title_search_lists_that_item_first(scorer):
    """200 titles, for a Star Wars fan and for someone with no history yet."""
    titles = unique_titles(scorer)
    sample = random.Random(7).sample(sorted(titles), 200)
    for context in (fan(), UserContext()):
        lists = [first_items(scorer, [context], titles[item])[0] for item in sample]
        first = sum(lst[0] == item for lst, item in zip(lists, sample, strict=True))
        top10 = sum(item in lst for lst, item in zip(lists, sample, strict=True))
        assert first >= 0.95 * len(sample) and top10 >= 0.99 * len(sample), (first, top10)


def test_a_search_leaves_the_stored_context_as_it_was():
    context = fan()
    searched = searched_context(context, "Fargo", 5_000, LIMITS)
    assert context == fan() and searched.events[:-1] == context.events
    assert (searched.events[-1].type, searched.events[-1].query) == ("search", "Fargo")


def test_a_just_added_item_is_first_for_its_exact_title(scorer, datasets_dir):
    """For the real histories of every MovieLens user (their last click held out)."""
    live = Catalogue()
    live.apply([NEW_ITEM])
    items = scorer.follow(live)
    assert items.num_extra == 1
    cases = loo_cases(movielens_events(datasets_dir), set(scorer.manifest.items), LIMITS)
    contexts = [c.context for c in cases]
    lists = first_items(scorer, contexts, "Quasar Lighthouse Keepers (1998)")
    share = sum(lst[0] == NEW_ITEM.item_id for lst in lists) / len(lists)
    assert len(lists) == 943 and share >= 0.95, share


def test_an_unavailable_item_never_appears_even_searched_by_its_exact_title(scorer):
    titles = unique_titles(scorer)
    gone = sorted(titles)[:20]
    live = Catalogue()
    live.apply([CatalogueRecord(i, "x", ts=1, available=False) for i in gone])
    scorer.follow(live)
    for item in gone:
        for context in (fan(), UserContext()):
            listed = first_items(scorer, [context], titles[item], k=scorer.manifest.max_k)[0]
            assert item not in listed and len(listed) == scorer.manifest.max_k
    scorer.follow(Catalogue())  # every trained item available again
    assert first_items(scorer, [fan()], titles[gone[0]])[0][0] == gone[0]
