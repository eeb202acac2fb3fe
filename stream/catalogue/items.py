"""The live catalogue: what the catalogue topic says now, and the item set a model scores.

:class:`Catalogue` holds every item record read from the catalogue topic (a removal keeps the
item's id, so a trained item removed stays out of lists). :class:`ItemSet` is what one model
scores with at one moment: the model's trained items, then the *extra items* (added after
export, or whose text changed since) with their vectors, and the items no list may hold.
A new item set is built off the event loop when the catalogue changes and replaces the old
one between batches; each batch is encoded and decoded with the one it started with.

Without a catalogue record a trained item is served as exported, so a deployment that never
produces to the catalogue topic behaves as before it existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from stream.contracts.manifest import DAY_MS, PAD_INDEX
from stream.contracts.records import CatalogueRecord

#: Text vectors (the item tower's output, without the id part) of a list of texts.
EmbedFn = Callable[[Sequence[str]], np.ndarray]


class Catalogue:
    """Item records by id, as the catalogue topic says now (``None``: removed).

    ``added`` keeps when each item was added: its record's ``added_ts``, else the ``ts`` of
    the first record read for it.
    """

    def __init__(self) -> None:
        self.records: dict[str, CatalogueRecord | None] = {}
        self.added: dict[str, int] = {}
        #: Bumped by every change; an item set built at version v reflects changes up to v.
        self.version = 0

    def apply(self, changes: Iterable[CatalogueRecord | str]) -> int:
        """Apply records and removals (an item id) in order; returns how many there were."""
        count = 0
        for change in changes:
            if isinstance(change, str):
                self.records[change] = None
            else:
                self.records[change.item_id] = change
                if change.added_ts is not None:
                    self.added[change.item_id] = change.added_ts
                else:
                    self.added.setdefault(change.item_id, change.ts)
            count += 1
        if count:
            self.version += 1
        return count

    def copy(self) -> Catalogue:
        """A copy to build an item set from in a thread while this one takes changes."""
        twin = Catalogue()
        twin.records = dict(self.records)
        twin.added = dict(self.added)
        twin.version = self.version
        return twin

    def __len__(self) -> int:
        return sum(record is not None for record in self.records.values())

    def available(self) -> int:
        """Items that may be recommended."""
        return sum(bool(r and r.available) for r in self.records.values())


@dataclass(frozen=True)
class ItemSet:
    """The items one model scores: trained ones, then extra ones, and the blocked indices.

    ``ids[i]`` is the item id of model index ``i`` (``ids[0]`` is padding); indices above the
    trained items are rows of ``extra``. ``blocked`` always holds 0 (padding) first.
    ``added_days[i]`` is when item ``i`` was added, in days since the epoch.
    """

    ids: tuple[str, ...]
    index: Mapping[str, int]
    extra: np.ndarray
    blocked: np.ndarray
    added_days: np.ndarray
    catalogue_version: int = 0
    #: (item id, text) -> vector of each extra item, reused by the next build.
    vectors: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def trained(cls, items: Sequence[str], added_ms: Sequence[int], dim: int) -> ItemSet:
        """The model's own items (added at ``added_ms``), nothing extra, nothing blocked."""
        return cls(
            ids=("", *items),
            index={item: i for i, item in enumerate(items, 1)},
            extra=np.zeros((0, dim), dtype=np.float32),
            blocked=np.array([PAD_INDEX], dtype=np.int64),
            added_days=days([0, *added_ms]),
        )

    def extended(self, names: Sequence[str], vectors: np.ndarray) -> ItemSet:
        """This set with more extra items (added with the newest; for measurements)."""
        start = len(self.ids)
        return replace(
            self,
            ids=(*self.ids, *names),
            index={**self.index, **{name: start + i for i, name in enumerate(names)}},
            extra=np.vstack([self.extra, vectors.astype(np.float32)]),
            added_days=np.concatenate(
                [self.added_days, np.full(len(names), self.added_days.max(), np.float32)]
            ),
            vectors={},
        )

    def item_index(self, item_id: str | None) -> int:
        """Model index of an item id (0 for unknown, absent or unavailable-and-new)."""
        return self.index.get(item_id, PAD_INDEX) if item_id is not None else PAD_INDEX

    @property
    def num_extra(self) -> int:
        """Items scored beyond the trained ones."""
        return len(self.extra)


def days(stamps_ms: Sequence[int]) -> np.ndarray:
    """Epoch milliseconds as float32 days since the epoch (the ranker's time unit)."""
    return (np.asarray(stamps_ms, dtype=np.float64) / DAY_MS).astype(np.float32)


def build_item_set(
    trained: Sequence[str],
    trained_texts: Sequence[str],
    trained_added_ms: Sequence[int],
    id_vectors: np.ndarray,
    catalogue: Catalogue,
    embed: EmbedFn,
    previous: ItemSet | None = None,
) -> ItemSet:
    """The item set for ``catalogue`` now.

    A trained item keeps its index and vector unless its record changed its text (then it
    is served as an extra item: its id part, the new text's vector) or made it unavailable
    or removed it (blocked). A new available item becomes an extra item with the id part of
    an item never seen (``id_vectors[0]``). Only texts not embedded for ``previous`` are
    embedded, in one call. Trained items keep the time they were added at training unless
    their record gives ``added_ts``; new ones were added when the catalogue says.
    """
    base = {item: i for i, item in enumerate(trained, 1)}
    reuse = previous.vectors if previous is not None else {}
    wanted: list[tuple[str, str, int]] = []  # (item id, text, index of its id part)
    blocked = [PAD_INDEX]
    for item_id, record in catalogue.records.items():
        at = base.get(item_id, PAD_INDEX)
        if record is None or not record.available:
            if at:
                blocked.append(at)
            continue
        if at and record.text == trained_texts[at - 1]:
            continue
        if at:
            blocked.append(at)  # its old vector gives way to the one from its new text
        wanted.append((item_id, record.text, at))
    missing = [text for item_id, text, _ in wanted if (item_id, text) not in reuse]
    fresh = iter(embed(missing)) if missing else iter(())
    vectors: dict[tuple[str, str], np.ndarray] = {}
    ids = ["", *trained]
    index = dict(base)
    added = [0, *trained_added_ms]
    for item_id, at in base.items():
        record = catalogue.records.get(item_id)
        if record is not None and record.added_ts is not None:
            added[at] = record.added_ts
    rows = []
    for item_id, text, at in wanted:
        key = (item_id, text)
        text_vector = reuse[key] if key in reuse else next(fresh)
        vectors[key] = text_vector
        index[item_id] = len(ids)
        ids.append(item_id)
        added.append(added[at] if at else catalogue.added[item_id])
        rows.append(id_vectors[at] + text_vector)
    dim = id_vectors.shape[1]
    extra = np.array(rows, dtype=np.float32).reshape(len(rows), dim)
    return ItemSet(
        ids=tuple(ids),
        index=index,
        extra=extra,
        blocked=np.array(blocked, dtype=np.int64),
        added_days=days(added),
        catalogue_version=catalogue.version,
        vectors=vectors,
    )
