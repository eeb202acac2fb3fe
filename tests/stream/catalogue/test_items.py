"""The live catalogue and the item sets built from it (a stand-in item tower; no model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.catalogue.items import Catalogue, ItemSet, build_item_set
from stream.contracts.records import CatalogueRecord

TRAINED = ("a", "b", "c")
TEXTS = ("Alpha | Drama", "Beta | Comedy", "Gamma | Action")
DIM = 4
ID_VECTORS = np.arange(4 * DIM, dtype=np.float32).reshape(4, DIM)  # row 0: a new item's id part


class Tower:
    """Embeds a text as its length in every dimension, and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[len(t)] * DIM for t in texts], dtype=np.float32).reshape(-1, DIM)


ADDED_MS = (0, 86_400_000, 2 * 86_400_000)


def build(catalogue: Catalogue, tower: Tower, previous: ItemSet | None = None) -> ItemSet:
    return build_item_set(TRAINED, TEXTS, ADDED_MS, ID_VECTORS, catalogue, tower, previous)


def record(item_id: str, text: str, available: bool = True, ts: int = 1) -> CatalogueRecord:
    return CatalogueRecord(item_id, text, ts=ts, available=available)


def test_without_records_the_trained_items_are_served_as_exported():
    items = build(Catalogue(), Tower())
    assert items.ids == ("", *TRAINED) and items.num_extra == 0
    assert items.blocked.tolist() == [0]
    assert items.item_index("b") == 2 and items.item_index("zzz") == 0


def test_a_record_repeating_a_trained_items_text_changes_nothing():
    catalogue = Catalogue()
    catalogue.apply([record("a", TEXTS[0])])
    tower = Tower()
    items = build(catalogue, tower)
    assert items.num_extra == 0 and items.blocked.tolist() == [0] and tower.calls == []


def test_a_new_item_is_embedded_with_the_id_part_of_an_item_never_seen():
    catalogue = Catalogue()
    catalogue.apply([record("new", "Delta | Horror")])
    items = build(catalogue, Tower())
    assert items.item_index("new") == 4 and items.ids[4] == "new"
    np.testing.assert_array_equal(items.extra[0], ID_VECTORS[0] + len("Delta | Horror"))


def test_a_text_change_re_embeds_and_keeps_the_items_own_id_part():
    catalogue = Catalogue()
    catalogue.apply([record("b", "Beta | Comedy | Director's cut")])
    items = build(catalogue, Tower())
    assert items.item_index("b") == 4  # served from its new vector
    assert 2 in items.blocked.tolist()  # its old one never listed
    np.testing.assert_array_equal(
        items.extra[0], ID_VECTORS[2] + len("Beta | Comedy | Director's cut")
    )


def test_unavailable_and_removed_items_are_blocked_and_come_back_when_available():
    catalogue = Catalogue()
    catalogue.apply([record("a", TEXTS[0], available=False), "c", record("new", "Delta")])
    catalogue.apply([record("new", "Delta", available=False)])
    items = build(catalogue, Tower())
    assert sorted(items.blocked.tolist()) == [0, 1, 3]
    assert items.item_index("new") == 0 and items.num_extra == 0  # never listed, not scored
    catalogue.apply([record("a", TEXTS[0]), record("c", TEXTS[2]), record("new", "Delta")])
    items = build(catalogue, Tower(), items)
    assert items.blocked.tolist() == [0] and items.item_index("new") == 4


def test_only_new_texts_are_embedded_and_in_one_call():
    catalogue = Catalogue()
    catalogue.apply([record("x", "X1"), record("y", "Y1")])
    tower = Tower()
    first = build(catalogue, tower)
    catalogue.apply([record("y", "Y2 longer"), record("z", "Z1")])
    second = build(catalogue, tower, first)
    assert tower.calls == [["X1", "Y1"], ["Y2 longer", "Z1"]]
    assert second.catalogue_version == catalogue.version == 2
    np.testing.assert_array_equal(second.extra[1], ID_VECTORS[0] + len("Y2 longer"))


def test_items_are_as_old_as_their_first_record_unless_it_says_when_they_were_added():
    catalogue = Catalogue()
    day = 86_400_000
    catalogue.apply([record("new", "Delta", ts=10 * day), record("b", "Beta 2", ts=11 * day)])
    catalogue.apply([record("new", "Delta 2", ts=12 * day)])  # a later text: same age
    catalogue.apply([CatalogueRecord("c", TEXTS[2], ts=13 * day, added_ts=5 * day)])
    items = build(catalogue, Tower())
    assert items.added_days[items.item_index("new")] == 10.0
    assert items.added_days[items.item_index("b")] == 1.0  # re-texted: trained when it was
    assert items.added_days[items.item_index("c")] == 5.0 and items.added_days[1] == 0.0
