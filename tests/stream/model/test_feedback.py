import math

import numpy as np
import pytest

from stream.catalogue.items import Catalogue
from stream.contracts.records import CatalogueRecord, Event
from stream.errors import ConfigError
from stream.model.feedback import ItemFeedback
from stream.settings import Settings
from tests.helpers import context_of, event

DAY = 86_400_000


def test_an_item_nothing_was_counted_for_keeps_its_score():
    feedback = ItemFeedback(prior_clicks=1.0, half_life_ms=0)
    assert feedback.bias(feedback.slots(["a", "b"])).tolist() == [0.0, 0.0]


def test_the_bias_is_clicks_over_expected_clicks_shrunk_by_the_prior():
    feedback = ItemFeedback(prior_clicks=1.0, half_life_ms=0)
    slots = feedback.slots(["hit", "flop"])
    # 10 lists (one click each) gave the hit 1.0 and the flop 3.0 expected clicks in all
    feedback.record_lists(slots, np.array([1.0, 3.0]), lists=10, ts=1)
    for n in range(10):
        feedback.observe_click("hit" if n < 9 else "other", 2 + n, tracked=n < 9)
    hit, flop = feedback.bias(slots)
    assert hit == pytest.approx(math.log((9 + 1) / (1 + 1)))
    assert flop == pytest.approx(math.log((0 + 1) / (3 + 1)))
    assert feedback.counts("hit") == pytest.approx((9.0, 1.0))


def test_expected_clicks_scale_with_clicks_per_list():
    """A worker makes one list for a user's events of a batch: two clicks per list, twice."""
    feedback = ItemFeedback(prior_clicks=1.0, half_life_ms=0)
    slots = feedback.slots(["x"])
    feedback.record_lists(slots, np.array([2.0]), lists=5, ts=1)
    for n in range(10):
        feedback.observe_click("y", 2 + n, tracked=False)
    assert feedback.counts("x") == (0.0, pytest.approx(4.0))


def test_counts_halve_every_half_life_in_event_time():
    feedback = ItemFeedback(prior_clicks=1.0, half_life_ms=DAY)
    slots = feedback.slots(["x"])
    for n in range(8):
        feedback.observe_click("x", n, tracked=True)
    feedback.record_lists(slots, np.array([1.0]), lists=8, ts=8)
    assert feedback.counts("x")[0] == pytest.approx(8.0, rel=1e-6)
    feedback.observe_click("other", 2 * DAY + 8, tracked=False)  # two days later
    observed, _ = feedback.counts("x")
    assert observed == pytest.approx(2.0, rel=1e-6)


def test_years_of_decay_stay_finite_and_exact():
    feedback = ItemFeedback(prior_clicks=1.0, half_life_ms=1000)  # a second: 10^5 half-lives
    slots = feedback.slots(["x"])
    for day in range(3):
        ts = day * 50 * DAY
        feedback.record_lists(slots, np.array([1.0]), lists=1, ts=ts)
        for n in range(4):
            feedback.observe_click("x", ts + n, tracked=True)
    observed, expected = feedback.counts("x")  # only the last day's clicks are left
    assert observed == pytest.approx(sum(2 ** (-(3 - n) / 1000) for n in range(4)))
    assert expected > 0 and np.isfinite(feedback.bias(slots)).all()


def test_a_prior_of_no_clicks_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="STREAMREC_NEW_ITEM_PRIOR_CLICKS"):
        ItemFeedback(prior_clicks=0.0, half_life_ms=0)
    with pytest.raises(ConfigError, match="STREAMREC_NEW_ITEM_HALF_LIFE_S"):
        Settings(new_item_half_life_s=-1.0).validate()


def clicked(user, items, start=0):
    """The context of ``user`` after clicking ``items`` in order from ``start``."""
    return context_of(*(event(n, item, user=user, ts=start + n) for n, item in enumerate(items)))


def rank_of(ranked, item):
    ids = [i for i, _ in ranked]
    return ids.index(item) if item in ids else len(ids)


def test_a_new_item_its_users_click_rises_in_everyones_lists(tiny_model_dir):
    from stream.model.scorer import Scorer

    trained = Scorer(tiny_model_dir, provider="cpu", top_k=50, exclude="seen")
    frozen = Scorer(
        tiny_model_dir, provider="cpu", top_k=50, exclude="seen", new_item_feedback=False
    )
    catalogue = Catalogue()
    catalogue.apply([CatalogueRecord("new-1", "Galactic Harvest (1998) | Sci-Fi", ts=0)])
    for scorer in (trained, frozen):
        scorer.follow(catalogue)
    histories = [trained.manifest.items[u * 7 : u * 7 + 5] for u in range(40)]
    before = [
        rank_of(r, "new-1")
        for r in trained.score([clicked(f"u{u}", h) for u, h in enumerate(histories)])
    ]
    # a hit: every user who got a list clicks it next
    clickers = [clicked(f"c{u}", h, start=1000) for u, h in enumerate(histories)]
    trained.score(clickers)
    frozen.score(clickers)
    for u in range(40):
        click = Event(f"c{u}-hit", f"c{u}", "click", 2000 + u, item_id="new-1")
        for scorer in (trained, frozen):
            scorer.observe(click)
    observed, expected = trained.feedback.counts("new-1")
    assert observed == pytest.approx(40.0) and 0 < expected < 40
    again = [clicked(f"v{u}", h, start=3000) for u, h in enumerate(histories)]
    after = [rank_of(r, "new-1") for r in trained.score(again)]
    unmoved = [rank_of(r, "new-1") for r in frozen.score(again)]
    assert unmoved == before  # without feedback nothing changes
    assert all(a <= b for a, b in zip(after, before, strict=True))
    assert sum(a < 10 for a in after) > sum(b < 10 for b in before)  # into many top tens
    assert sum(after) < 0.75 * sum(before)
