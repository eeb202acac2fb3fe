"""Diagnostic: ItemKNN whose counts are updated online from the stream, on cold clicks.

A simplified replay (each click scored with every click before it counted; no batching),
run from the repository root. Printed (2026-12-02): online ItemKNN 0.201 HR@10 on the
29,192 clicks after the cut by users with a history, 0.0221 on the 542 cold-item clicks;
recent popularity in the same replay 0.0668 and 0.1236.
"""

from collections import defaultdict, deque

import numpy as np

from model_export.data import sources as data
from model_export.evaluation.baselines import ItemKNNConfig
from stream.contracts.manifest import DAY_MS
from stream.tools.backtest.cli import cut_time

ev = data.movielens_events(".cache/datasets")
cat = data.movielens_catalogue(".cache/datasets")
idx = {c.item_id: i for i, c in enumerate(cat, 1)}
N = len(cat)
cut = cut_time(ev, 0.7)
cfg = ItemKNNConfig()
C = np.zeros((N + 1, N + 1), dtype=np.float32)
seqs = defaultdict(list)
first = {}
for e in ev:
    if e.item_id in idx:
        first.setdefault(e.item_id, e.ts)
pop = deque()
cnt = np.zeros(N + 1)
res = defaultdict(list)
seen = defaultdict(set)
before = set()
for e in sorted(ev, key=lambda e: e.ts):
    if e.type != "click" or e.item_id not in idx:
        continue
    j = idx[e.item_id]
    s = seqs[e.user_id]
    if e.ts >= cut and s:
        recent = s[-cfg.history_length :]
        w = np.zeros(N + 1, dtype=np.float32)
        np.add.at(w, recent, cfg.history_decay ** np.arange(len(recent))[::-1])
        sc = w @ C
        avail = np.array([first.get(c.item_id, 1e18) <= e.ts for c in cat])
        mask = np.concatenate([[False], avail])
        ex = list(seen[e.user_id])
        for name, score in (("knn_online", sc), ("popular", cnt.copy()), ("mix", sc + 0.0)):
            score = np.where(mask, score, -np.inf).astype(np.float64)
            score[ex] = -np.inf
            top = np.argpartition(-score, 10)[:10]
            top = top[np.argsort(-score[top])]
            hit = j in top and np.isfinite(score[j])
            res[(name, first[e.item_id] >= cut)].append(hit)
    # update
    n = len(s)
    for d in range(1, min(cfg.cooc.window, n) + 1):
        a = s[n - d]
        wgt = cfg.cooc.decay ** (d - 1)
        C[a, j] += wgt
        C[j, a] += wgt * cfg.cooc.backward
    s.append(j)
    seen[e.user_id].add(j)
    pop.append((e.ts, j))
    cnt[j] += 1
    while pop and pop[0][0] < e.ts - 7 * DAY_MS:
        _, x = pop.popleft()
        cnt[x] -= 1
for k, v in sorted(res.items()):
    print(k, len(v), round(float(np.mean(v)), 4))
