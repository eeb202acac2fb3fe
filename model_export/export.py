"""ONNX export of the ranker into a model directory, with a parity check before it is written.

The export contract (input/output names, dynamic axes, opset, tolerance) is defined here
once. ``manifest.json`` is written last: a directory without one is never half-served.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from model_export.model import HistoryRanker
from stream.errors import ModelExportError
from stream.manifest import (
    RANKER_INPUTS,
    RANKER_OUTPUTS,
    ModelManifest,
    sha256_file,
    write_manifest,
)

OPSET = 18
ONNX_FILE = "model.onnx"
#: Largest allowed |score_onnx - score_torch| in the parity check (fp32).
SCORE_TOLERANCE = 1e-4
#: Axes fixed at export (from the model config); every other named axis is dynamic.
FIXED_AXES = frozenset({"history", "max_k"})
DYNAMIC_AXES = {
    spec.name: {i: str(axis) for i, axis in enumerate(spec.shape) if axis not in FIXED_AXES}
    for spec in (*RANKER_INPUTS, *RANKER_OUTPUTS)
}


def sample_inputs(
    model: HistoryRanker, batch: int, *, seed: int = 0, history: int | None = None
) -> dict[str, np.ndarray]:
    """Padded, variable-length random inputs shaped like the worker's (for parity checks)."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    length = history or cfg.history_length
    item_ids = rng.integers(1, cfg.num_items + 1, size=(batch, length), dtype=np.int64)
    event_types = rng.integers(1, 4, size=(batch, length), dtype=np.int64)
    for row, keep in enumerate(rng.integers(1, length + 1, size=batch)):
        item_ids[row, : length - keep] = 0
        event_types[row, : length - keep] = 0
    exclude_ids = rng.integers(0, cfg.num_items + 1, size=(batch, 7), dtype=np.int64)
    return {"item_ids": item_ids, "event_types": event_types, "exclude_ids": exclude_ids}


def check_parity(
    model: HistoryRanker, onnx_path: Path, batches: Sequence[int] = (1, 64, 512)
) -> dict[str, Any]:
    """Compare PyTorch and ONNX Runtime on padded batches; collect every mismatch, then raise.

    Raises:
        ModelExportError: listing each batch whose scores or rankings differ.
    """
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    problems: list[str] = []
    top10: list[float] = []
    worst = 0.0
    for seed, batch in enumerate(batches):
        inputs = sample_inputs(model, batch, seed=seed)
        with torch.no_grad():
            expected = [t.numpy() for t in model(*(torch.from_numpy(v) for v in inputs.values()))]
        scores, indices = session.run(["scores", "indices"], inputs)
        diff = float(np.abs(scores - expected[0]).max())
        worst = max(worst, diff)
        if diff > SCORE_TOLERANCE:
            problems.append(f"batch {batch}: max |score diff| {diff:.2e} > {SCORE_TOLERANCE:.0e}")
        same = float(_same_ranking(expected[0], expected[1], indices).mean())
        if same < 1.0:
            problems.append(f"batch {batch}: rankings agree (up to ties) for {same:.2%} of users")
        top10.append(float((indices[:, :10] == expected[1][:, :10]).all(axis=1).mean()))
    if problems:
        raise ModelExportError("ONNX parity failed:\n  " + "\n  ".join(problems))
    return {"max_abs_score_diff": worst, "top10_identical": min(top10), "batches": list(batches)}


def _same_ranking(scores: np.ndarray, expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per row: rankings equal, except where PyTorch's own scores tie within tolerance."""
    close = np.abs(np.diff(scores, axis=1)) <= SCORE_TOLERANCE
    tie = np.zeros_like(expected, dtype=bool)
    tie[:, 1:] |= close
    tie[:, :-1] |= close
    return ~((expected != got) & ~tie).any(axis=1)


def export_onnx(model: HistoryRanker, path: Path) -> Path:
    """Write the ranker's graph under the export contract (names, dynamic axes, opset)."""
    model.eval()
    example = tuple(torch.from_numpy(v) for v in sample_inputs(model, 2).values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=[s.name for s in RANKER_INPUTS],
            output_names=[s.name for s in RANKER_OUTPUTS],
            dynamic_axes=DYNAMIC_AXES,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def export(
    model: HistoryRanker, items: Sequence[str], out_dir: str | Path, training: dict[str, Any]
) -> ModelManifest:
    """Export ``model`` to ``out_dir`` (``model.onnx`` then ``manifest.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, out / ONNX_FILE)
    parity = check_parity(model, onnx_path)
    digest = sha256_file(onnx_path)
    created = datetime.now(UTC)
    manifest = ModelManifest(
        model_version=f"gru-{created:%Y%m%dT%H%M%SZ}-{digest[:8]}",
        onnx_sha256=digest,
        items=tuple(items),
        history_length=model.config.history_length,
        max_k=model.config.max_k,
        opset=OPSET,
        created_at=created.isoformat(timespec="seconds"),
        onnx_file=ONNX_FILE,
        training={**training, "parity": parity},
    )
    write_manifest(out, manifest)
    return manifest
