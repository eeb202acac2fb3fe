"""Diagnostic: a per-item bias fit online from the stream (observed vs expected clicks).

Run from the repository root at commit 3593654 (model format 3, before the click feedback
was built), on the backtest's exported model: ``python diagnostic_online_bias.py
.cache/backtest/model``. It reads every item's score from the graph's TopK input and applies
each variant's bias in numpy. Run 1 (``diagnostic_online_bias_run1.log``) had the variants
``extra_a1``, ``extra_a3``, ``extra_a10`` (extra items, no decay) and ``all_a3_hl7``,
``all_a10_hl7`` (every item, a week's half-life); run 2 is this file. It looks at the
backtest's future: a diagnostic, not a result.
"""

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import orjson

from model_export.data import sources as data
from stream.contracts.manifest import DAY_MS
from stream.model.scorer import Scorer
from stream.tools.backtest import cli as temporal

MODEL = sys.argv[1] if len(sys.argv) > 1 else ".cache/backtest/model"
VARIANTS = {  # name: (pseudo count a, scope, half-life days, top)
    "model": None,
    "extra_a1": (1.0, "extra", None, None),
    "extra_a1_top100": (1.0, "extra", None, 100),
    "extra_a1_top100_hl7": (1.0, "extra", 7.0, 100),
    "extra_a1_hl7": (1.0, "extra", 7.0, None),
}


class Shared:
    def __init__(self, model_dir):
        self.s = Scorer(model_dir, provider="cpu", top_k=10, exclude="seen")
        m = onnx.load(str(Path(model_dir) / "ranker.onnx"))
        topk = [n for n in m.graph.node if n.op_type == "TopK"][0]
        self.name = topk.input[0]
        m.graph.output.append(
            onnx.helper.make_tensor_value_info(self.name, onnx.TensorProto.FLOAT, None)
        )
        self.sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        self.key = None
        self.full = None
        self.items = None
        self.trained = len(self.s.manifest.items) + 1

    def get(self, contexts):
        if self.key is not contexts:
            items = self.s.items
            inputs = self.s.encode(contexts, items)
            self.full = self.sess.run([self.name], inputs)[0].astype(np.float64)
            self.items = items
            self.key = contexts
        return self.full, self.items


class Variant:
    def __init__(self, shared, spec):
        self.sh = shared
        self.spec = spec
        self.obs = defaultdict(float)
        self.exp = defaultdict(float)
        self.t = None

    def follow(self, live):
        if self.spec is None:  # one follower is enough
            return self.sh.s.follow(live)

    def rank(self, contexts, targets):
        full, items = self.sh.get(contexts)
        ids = items.ids
        scores = full.copy()
        if self.spec is not None:
            a, scope, hl, topn = self.spec
            now = max(t.event.ts for t in targets)
            if hl and self.t is not None:
                f = 0.5 ** ((now - self.t) / (hl * DAY_MS))
                for d in (self.obs, self.exp):
                    for k in d:
                        d[k] *= f
            self.t = now
            start = self.sh.trained if scope == "extra" else 1
            bias = np.zeros(scores.shape[1])
            for i in range(start, len(ids)):
                o, e = self.obs.get(ids[i], 0.0), self.exp.get(ids[i], 0.0)
                if o or e:
                    bias[i] = math.log((o + a) / (e + a))
            if topn:
                cut = np.sort(full, axis=1)[:, -topn][:, None]
                full = np.where(full >= cut, full, -1e9)
                scores = np.where(full >= cut, scores, -1e9)
            scores = scores + bias
            # update after the lists are made (prequential)
            z = full - full.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            mass = p[:, start:].sum(axis=0)
            for i in np.flatnonzero(mass > 1e-6):
                self.exp[ids[start + i]] += mass[i]
            for t in targets:
                idx = items.item_index(t.event.item_id)
                if idx >= start:
                    self.obs[t.event.item_id] += 1.0
        scores[:, 0] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :10]
        return [[ids[i] for i in row if scores[r, i] > -1e8] for r, row in enumerate(top)]


shared = Shared(MODEL)
variants = {n: Variant(shared, s) for n, s in VARIANTS.items()}
orig = temporal._model
temporal._model = lambda v: v.rank
ev = data.movielens_events(".cache/datasets")
cat = data.movielens_catalogue(".cache/datasets")
cut = temporal.cut_time(ev, 0.7)
args = argparse.Namespace(popular_days=7.0)
rep = temporal.replay_future(ev, cat, cut, variants, args)
summ = temporal.summarise(rep, cut)
for g in ("overall", "cold", "new_users", "returning_users"):
    print(g, {n: (f["hr@10"], f["hr@10_ci95"], f["ndcg@10"]) for n, f in summ[g].items()})
for g in ("overall", "cold"):
    print("diff", g, {n: d["hr@10"] for n, d in summ["model_minus_baseline"][g].items()})
Path("/tmp/exp/online_bias.json").write_bytes(orjson.dumps(summ))
