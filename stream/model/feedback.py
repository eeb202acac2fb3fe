"""Click feedback for new items: a score bias per extra item, fit online from the stream.

An item added to the catalogue after export has no id vector of its own: the model scores
it by its text (the item tower) alone, and cannot know that the shop's users are clicking
it. Every scorer therefore keeps, for each of its extra items (added after export, or
re-embedded after a text change):

- ``o``, the clicks on it seen so far, and
- ``e``, the clicks the model expected it to get: over every list the scorer made, the
  item's softmax probability in that list (before any bias, seen and blocked items
  excluded), scaled by clicks per list (``C / L``, all clicks over all lists), since a
  worker makes one list for a user's events of one batch.

Both decay with a half-life in event time. The item's bias, added to its score, is
``log((o + a) / (e + a))``: the maximum-likelihood correction of a softmax score from its
clicks (``o = e · exp(bias)``), shrunk toward no correction by ``a`` pseudo-clicks. An item
clicked as often as the model expected keeps its score; a new release the users click far
more than its text suggests rises with the evidence, click by click; one nobody clicks though
the model expected it sinks. Items the model trained on get no bias: their id vectors
already hold what their clicks said.

The counts are prequential: a list is made with the bias of the clicks before it, and its own
probabilities are counted after it. They live in the scorer's memory (a restarted worker or a
new model starts again from the model's own scores; a few clicks bring a hot item back) and
each worker counts the clicks and lists of its own partitions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from stream.errors import ConfigError

#: Rescale the stored counts once their scale factor reaches ``2 ** RESCALE_HALF_LIVES``.
RESCALE_HALF_LIVES = 400.0


class ItemFeedback:
    """Decaying observed and expected clicks per item, and the bias they give.

    Items are addressed by slot (:meth:`slots`), so a batch over many items costs array
    operations, not a lookup per item. Thread-safe: clicks are counted on the event loop,
    lists in scoring threads.
    """

    def __init__(self, prior_clicks: float, half_life_ms: float) -> None:
        if prior_clicks <= 0:
            msg = f"STREAMREC_NEW_ITEM_PRIOR_CLICKS must be > 0, got {prior_clicks!r}"
            raise ConfigError(msg)
        self.prior_clicks = prior_clicks
        self.half_life_ms = half_life_ms
        self._lock = threading.Lock()
        self._slot: dict[str, int] = {}
        self._observed = np.zeros(0)
        self._expected = np.zeros(0)
        #: Decayed totals: every click counted, every list made.
        self._clicks = 0.0
        self._lists = 0.0
        # Stored counts are scaled by 2 ** ((t - origin) / half-life): decay without touching
        # every item at every step. ``now`` is the newest event time seen (epoch ms).
        self._origin: float | None = None
        self.now = 0.0

    def slots(self, item_ids: Sequence[str]) -> np.ndarray:
        """The count slots of ``item_ids`` (made for items new to it)."""
        with self._lock:
            return self._slots(item_ids)

    def _slots(self, item_ids: Sequence[str]) -> np.ndarray:
        slots = np.fromiter(
            (self._slot.setdefault(item, len(self._slot)) for item in item_ids),
            dtype=np.int64,
            count=len(item_ids),
        )
        if len(self._slot) > len(self._observed):
            grow = max(len(self._slot), 2 * len(self._observed)) - len(self._observed)
            self._observed = np.concatenate([self._observed, np.zeros(grow)])
            self._expected = np.concatenate([self._expected, np.zeros(grow)])
        return slots

    def _weight(self, ts: float) -> float:
        """The stored weight of one count at ``ts`` (rescaling everything when it grows)."""
        self.now = max(self.now, ts)
        if self.half_life_ms <= 0:
            return 1.0
        if self._origin is None:
            self._origin = self.now
        if (self.now - self._origin) / self.half_life_ms > RESCALE_HALF_LIVES:
            shrink = self._scale()
            self._observed *= shrink
            self._expected *= shrink
            self._clicks *= shrink
            self._lists *= shrink
            self._origin = self.now
        return 2.0 ** ((ts - self._origin) / self.half_life_ms)

    def _scale(self) -> float:
        """Stored counts times this are the counts now."""
        if self.half_life_ms <= 0 or self._origin is None:
            return 1.0
        return 2.0 ** (-(self.now - self._origin) / self.half_life_ms)

    def observe_click(self, item_id: str | None, ts: float, *, tracked: bool) -> None:
        """Count a click at ``ts`` (epoch ms); ``tracked``: on an item that gets a bias."""
        with self._lock:
            weight = self._weight(ts)
            self._clicks += weight
            if tracked and item_id is not None:
                self._observed[self._slots([item_id])[0]] += weight

    def record_lists(
        self, slots: np.ndarray, probability: np.ndarray, lists: int, ts: float
    ) -> None:
        """Count ``lists`` lists made at ``ts``.

        ``probability[i]`` is the summed probability of the item in ``slots[i]`` over them,
        before any bias.
        """
        with self._lock:
            weight = self._weight(ts)
            self._lists += weight * lists
            self._expected[slots] += weight * probability

    def _decayed(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Observed and expected clicks of ``slots`` now (call under the lock)."""
        scale = self._scale()
        per_list = self._clicks / self._lists if self._lists > 0 else 1.0
        return self._observed[slots] * scale, self._expected[slots] * scale * per_list

    def bias(self, slots: np.ndarray) -> np.ndarray:
        """The score bias of the items in ``slots`` now (float32)."""
        with self._lock:
            observed, expected = self._decayed(slots)
        a = self.prior_clicks
        return np.log((observed + a) / (expected + a)).astype(np.float32)

    def counts(self, item_id: str) -> tuple[float, float]:
        """(observed, expected) clicks of one item now, decayed (for logs and tests)."""
        with self._lock:
            observed, expected = self._decayed(self._slots([item_id]))
        return float(observed[0]), float(expected[0])
