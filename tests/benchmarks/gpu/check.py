"""GPU figures for one model directory: provider, model-only users/s by catalogue size, agreement.

Usage: python3 check.py MODEL_DIR OUT_JSON (run by run.sh on the device machine).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import orjson

from stream.contracts.records import Event
from stream.model.scorer import Scorer
from stream.state.context import UserContext, apply_event

SIZES = (0, 10_000, 100_000)


def contexts(items: tuple[str, ...], users: int, seed: int = 0) -> list[UserContext]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(users):
        ctx = None
        for i, item in enumerate(rng.choice(items, size=30)):
            ctx, _ = apply_event(
                ctx,
                Event(f"{u}-{i}", str(u), "click", i, item_id=str(item)),
                max_events=50,
                max_purchased=500,
            )
        out.append(ctx)
    return out


def rate(scorer: Scorer, inputs: dict, batch: int, seconds: float = 5.0) -> float:
    scorer.run(inputs)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        scorer.run(inputs)
        calls += 1
    return calls * batch / elapsed


def main(model_dir: str, out: str) -> None:
    gpu = Scorer(model_dir, provider="cuda", top_k=20)
    cpu = Scorer(model_dir, provider="cpu", top_k=20)
    users = contexts(gpu.manifest.items, 512)
    figures: dict = {"providers": gpu.providers, "ranker": gpu.ranker_role}
    trained = gpu.items
    rows = []
    for size in SIZES:
        extra = max(0, size - len(trained.ids) + 1)
        names = [f"synthetic-{n}" for n in range(extra)]
        vectors = np.random.default_rng(1).normal(0, 0.1, (extra, trained.extra.shape[1]))
        gpu.items = trained.extended(names, vectors)
        for batch in (128, 512):
            rows.append(
                {
                    "items": len(gpu.items.ids) - 1,
                    "batch": batch,
                    "model_only_users_per_s": rate(gpu, gpu.encode(users[:batch]), batch),
                }
            )
    gpu.items = trained
    figures["catalogue_scaling"] = rows
    _, on_gpu, _ = gpu.run(gpu.encode(users))
    _, on_cpu, _ = cpu.run(cpu.encode(users))
    figures["top10_overlap_cpu_vs_gpu"] = float(
        np.mean(
            [
                len(set(a[:10]) & set(b[:10])) / 10
                for a, b in zip(on_gpu.tolist(), on_cpu.tolist(), strict=True)
            ]
        )
    )
    with open(out, "wb") as fh:
        fh.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
