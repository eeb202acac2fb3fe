"""Cost of the training mask per step, the first version against the shipped one, one run.

Run from the repository root with this file's path (this folder holds it).
Times building the mask and filling a step's logits (128 windows of 50 events, MovieLens'
1,682 items) for the cumulative-sum version that ``make evaluate`` and ``make backtest``
ran and for :func:`model_export.training.train._excluded`, alternated over rounds, checks that both
give the same mask, and prints one JSON object.
"""

import json
import statistics
import time

import torch

from model_export.model.ranker import MASK_SCORE
from model_export.training.train import _excluded

ROWS, LENGTH, ITEMS, ROUNDS, STEPS = 128, 50, 1682, 5, 10


def cumulative(item_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The first version: int16 marks per position, a cumulative sum over the window."""
    marks = torch.zeros((*item_ids.shape, ITEMS + 1), dtype=torch.int16)
    marks.scatter_(-1, item_ids.unsqueeze(-1), 1)
    excluded = marks.cumsum(1) > 0
    excluded[..., 0] = False
    return excluded.scatter_(-1, targets.unsqueeze(-1), False)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    item_ids = torch.randint(0, ITEMS + 1, (ROWS, LENGTH), generator=generator)
    item_ids[:, :10] = 0  # left padding
    item_ids[:, 20] = item_ids[:, 15]  # a repeat
    targets = torch.randint(0, ITEMS + 1, (ROWS, LENGTH), generator=generator)
    targets[:, 30] = item_ids[:, 5]  # a seen target
    types = torch.ones_like(item_ids)
    logits = torch.randn(ROWS, LENGTH, ITEMS + 1, generator=generator)
    versions = {
        "cumulative_sum": lambda: cumulative(item_ids, targets),
        "first_position": lambda: _excluded(item_ids, types, targets, "seen", ITEMS),
    }
    same = torch.equal(versions["cumulative_sum"](), versions["first_position"]())
    times: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(ROUNDS):
        for name, build in versions.items():
            started = time.perf_counter()
            for _ in range(STEPS):
                logits.masked_fill(build(), MASK_SCORE)
            times[name].append((time.perf_counter() - started) / STEPS * 1000)
    medians = {name: round(statistics.median(t), 1) for name, t in times.items()}
    print(
        json.dumps(
            {
                "shape": [ROWS, LENGTH, ITEMS + 1],
                "same_mask": same,
                "ms_per_step_median": medians,
                "ms_per_step_rounds": {n: [round(x, 1) for x in t] for n, t in times.items()},
                "ratio": round(medians["cumulative_sum"] / medians["first_position"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
