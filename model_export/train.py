"""Training of the history ranker on event logs: next-click prediction, full softmax.

Every click with at least one earlier event is an example: the input is the encoding the
worker builds (the last ``history_length`` events before it, left-padded), the target its
item. Each user's last click is held out for validation (HR@10 / NDCG@10, earlier items
masked), which is reported in the model's manifest.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn
from tqdm import tqdm

from model_export.model import HistoryRanker, RankerConfig
from stream.manifest import EVENT_TYPE_IDS, PAD_INDEX
from stream.records import Event


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings."""

    epochs: int = 3
    batch_size: int = 512
    lr: float = 5e-3
    seed: int = 7
    max_train_examples: int = 0  # 0 = all; small values make a tiny model for tests


@dataclass
class Examples:
    """Encoded examples: left-padded histories and target item indices."""

    item_ids: np.ndarray
    event_types: np.ndarray
    targets: np.ndarray
    seen: list[np.ndarray]  # every item index before the target (for masked evaluation)


def build_examples(
    events: Sequence[Event], index: dict[str, int], history_length: int
) -> tuple[Examples, Examples]:
    """Split events into training examples and one validation example per user."""
    sequences: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for ev in events:
        item = index.get(ev.item_id, PAD_INDEX) if ev.item_id is not None else PAD_INDEX
        sequences[ev.user_id].append((item, EVENT_TYPE_IDS[ev.type]))
    train: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]] = []
    valid: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]] = []
    pad = np.zeros(history_length, dtype=np.int64)
    for seq in sequences.values():
        items = np.array([s[0] for s in seq], dtype=np.int64)
        types = np.array([s[1] for s in seq], dtype=np.int64)
        clicks = np.flatnonzero((types == EVENT_TYPE_IDS["click"]) & (items != PAD_INDEX))
        clicks = clicks[clicks >= 1]
        if len(clicks) == 0:
            continue
        item_windows = sliding_window_view(np.concatenate([pad, items]), history_length)
        type_windows = sliding_window_view(np.concatenate([pad, types]), history_length)
        last = clicks[-1]
        valid.append(
            (item_windows[[last]], type_windows[[last]], items[[last]], [np.unique(items[:last])])
        )
        head = clicks[:-1]
        train.append((item_windows[head], type_windows[head], items[head], []))
    return _stack(train), _stack(valid)


def _stack(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]]) -> Examples:
    return Examples(
        item_ids=np.concatenate([p[0] for p in parts]),
        event_types=np.concatenate([p[1] for p in parts]),
        targets=np.concatenate([p[2] for p in parts]),
        seen=[s for p in parts for s in p[3]],
    )


def seed_everything(seed: int) -> None:
    """Fix every random source used in training."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: HistoryRanker, examples: Examples, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k with every earlier item of the user masked (full ranking)."""
    model.eval()
    hits, gains = [], []
    for start in range(0, len(examples.targets), 512):
        stop = start + 512
        logits = model.logits(
            torch.from_numpy(examples.item_ids[start:stop]),
            torch.from_numpy(examples.event_types[start:stop]),
        )
        logits[:, PAD_INDEX] = -torch.inf
        for row, seen in enumerate(examples.seen[start:stop]):
            logits[row, torch.from_numpy(seen)] = -torch.inf
        top = torch.topk(logits, k, dim=1).indices.numpy()
        for row, target in enumerate(examples.targets[start:stop]):
            rank = np.flatnonzero(top[row] == target)
            hits.append(float(rank.size > 0))
            gains.append(1.0 / np.log2(rank[0] + 2) if rank.size else 0.0)
    return {f"hr@{k}": float(np.mean(hits)), f"ndcg@{k}": float(np.mean(gains))}


def train(
    events: Sequence[Event],
    items: Sequence[str],
    model_config: RankerConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
) -> tuple[HistoryRanker, dict[str, Any]]:
    """Train a ranker on ``events`` over the catalogue ``items``; returns it and a report."""
    seed_everything(train_config.seed)
    index = {item: i + 1 for i, item in enumerate(items)}
    train_set, valid_set = build_examples(events, index, model_config.history_length)
    n = len(train_set.targets)
    if train_config.max_train_examples:
        n = min(n, train_config.max_train_examples)
    model = HistoryRanker(model_config)
    optimiser = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    for epoch in range(train_config.epochs):
        model.train()
        order = np.random.permutation(len(train_set.targets))[:n]
        batches = range(0, n, train_config.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{train_config.epochs}", disable=not progress)
        total = 0.0
        for start in bar:
            rows = order[start : start + train_config.batch_size]
            logits = model.logits(
                torch.from_numpy(train_set.item_ids[rows]),
                torch.from_numpy(train_set.event_types[rows]),
            )
            loss = loss_fn(logits, torch.from_numpy(train_set.targets[rows]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(rows)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        scores = evaluate(model, valid_set)
        history.append({"epoch": epoch + 1, "loss": total / max(n, 1), **scores})
    model.eval()
    report = {
        "train_examples": n,
        "valid_users": len(valid_set.targets),
        "seconds": round(time.perf_counter() - started, 1),
        "history": history,
        "valid": history[-1] if history else {},
        "train_config": asdict(train_config),
        "model_config": asdict(model_config),
    }
    return model, report
