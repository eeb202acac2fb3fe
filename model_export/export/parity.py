"""PyTorch vs ONNX Runtime parity on padded, variable-length batches.

Every check runs all its batches and collects each mismatch before failing, so one run
shows everything that is wrong. Thresholds (the export contract, see
:mod:`model_export.export.onnx`): fp32 ranker max |score diff| <= ``SCORE_TOLERANCE`` and top-10
identical for >= ``TOP10_IDENTICAL`` of users, with no extra items and with many, blocked
items included (:data:`CASES`); fp16 ranker mean top-10 overlap over every case's users >=
``FP16_TOP10_OVERLAP``; each extra item's probability mass (``extra_mass``) within
``MASS_TOLERANCE`` of PyTorch's (relative to their sum where it exceeds 1; fp16:
``FP16_MASS_TOLERANCE``);
query encoder max |vector diff| <= ``SCORE_TOLERANCE``; the item tower (the query encoder on
item texts, plus the id part) reproduces the trained items' vectors within
``ITEM_VECTOR_TOLERANCE`` and, fed to the ONNX ranker as extra items, ranks as PyTorch does;
the int8
query encoder, which is shipped only if it passes, ranks with mean top-10 overlap >=
``INT8_QUERY_TOP10_OVERLAP`` against the fp32 one.

"Identical" allows exact ties only: two items whose PyTorch scores differ by at most
``TIE_TOLERANCE`` may trade places (float rounding decides their order in either runtime);
any other difference counts. The strict share is reported as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from torch import nn

from model_export.model.ranker import SequenceRanker
from model_export.ranking import topk_overlap
from stream.contracts.manifest import EVENT_TYPE_IDS, PAD_INDEX
from stream.errors import ModelExportError
from stream.model.diversity import unit_rows
from stream.model.queries import tokenize

SCORE_TOLERANCE = 1e-4
TOP10_IDENTICAL = 0.999
TIE_TOLERANCE = 1e-5
FP16_TOP10_OVERLAP = 0.99
#: ``extra_mass`` (summed probabilities): largest difference, relative to the sum over 1.
MASS_TOLERANCE = 1e-5
FP16_MASS_TOLERANCE = 1e-2
INT8_QUERY_TOP10_OVERLAP = 0.99
ITEM_VECTOR_TOLERANCE = 1e-3
#: (batch size, extra items) checked: a single user and a large batch, each without extra
#: items and with many; a typical micro-batch with a few.
CASES = ((1, 0), (1, 1000), (64, 3), (512, 0), (512, 1000))


def ranker_inputs(
    model: SequenceRanker, batch: int, *, extra: int = 0, seed: int = 0
) -> dict[str, np.ndarray]:
    """Worker-shaped inputs for parity checks.

    Left-padded histories of random lengths, including length 1 and empty (a new user),
    search events with query vectors, ``extra`` items after the trained ones (events on
    them included) with click-feedback biases, blocked items and excluded items.
    """
    rng = np.random.default_rng(seed)
    cfg = model.config
    length = cfg.history_length
    total = cfg.num_items + extra
    item_ids = rng.integers(1, total + 1, size=(batch, length), dtype=np.int64)
    click, search, purchase = (EVENT_TYPE_IDS[t] for t in ("click", "search", "purchase"))
    mix = np.array([click, click, click, search, purchase])  # mostly clicks, as in real logs
    event_types = rng.choice(mix, size=(batch, length)).astype(np.int64)
    keep = rng.integers(0, length + 1, size=batch)
    keep[: min(batch, 2)] = [1, 0][: min(batch, 2)]  # a length-1 history and an empty one
    for row, n in enumerate(keep):
        item_ids[row, : length - n] = 0
        event_types[row, : length - n] = 0
    searches = event_types == search
    item_ids[searches] = PAD_INDEX  # searches name no item
    query_table = _text_vectors(rng, int(searches.sum()) + 1, cfg.dim, cfg.search_dim)
    query_table[0] = 0.0
    query_ids = np.zeros((batch, length), dtype=np.int64)
    query_ids[searches] = np.arange(1, len(query_table))
    exclude_ids = rng.integers(0, total + 1, size=(batch, 7), dtype=np.int64)
    extra_items = _text_vectors(rng, extra, cfg.dim, cfg.search_dim)
    # click feedback: most items near no bias, some pushed far up or down
    extra_bias = rng.normal(0, 1.0, size=extra).astype(np.float32)
    extra_bias[::7] *= 5.0
    blocked_ids = np.concatenate([[0], rng.integers(1, total + 1, size=5)]).astype(np.int64)
    # days since the epoch around 2026: items added over the last year, lists made today
    today = 20_500.0
    item_added = (today - rng.uniform(0, 365, size=total + 1)).astype(np.float32)
    item_added[-3:] = today + 5.0  # added after the list's time: no age term
    user_days = (today + rng.uniform(0, 1, size=batch)).astype(np.float32)
    # seconds from each event to the list: gaps of about a minute, some of hours
    gaps = rng.exponential(60.0, size=(batch, length)) * rng.choice([1, 1, 1, 100], (batch, length))
    event_ages = np.cumsum(gaps[:, ::-1], axis=1)[:, ::-1] - gaps[:, -1:]
    event_ages = np.where(event_types > 0, event_ages, 0.0).astype(np.float32)
    return {
        "item_ids": item_ids,
        "event_types": event_types,
        "query_ids": query_ids,
        "query_table": query_table,
        "extra_items": extra_items,
        "extra_bias": extra_bias,
        "blocked_ids": blocked_ids,
        "item_added": item_added,
        "user_days": user_days,
        "event_ages": event_ages,
        "exclude_ids": exclude_ids,
    }


def _text_vectors(rng: np.random.Generator, rows: int, dim: int, search_dim: int) -> np.ndarray:
    """``rows`` query-shaped vectors: a ranker part, then a unit search part."""
    taste = rng.normal(0, 0.3, size=(rows, dim))
    search = unit_rows(rng.normal(0, 1.0, size=(rows, search_dim)))
    return np.hstack([taste, search]).astype(np.float32)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # fp16 graphs log every CPU fallback otherwise
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_ranker(
    model: SequenceRanker,
    onnx_path: Path,
    fp16_path: Path | None = None,
    cases: Sequence[tuple[int, int]] = CASES,
) -> dict[str, Any]:
    """Compare the ranker (and its fp16 variant) with PyTorch; raise listing every mismatch.

    Raises:
        ModelExportError: naming each batch and figure outside the contract.
    """
    model.eval()
    session = _session(onnx_path)
    half = _session(fp16_path) if fp16_path is not None else None
    problems: list[str] = []
    worst, worst_mass, worst_half_mass, identical, strict, overlap = 0.0, 0.0, 0.0, [], [], []
    for seed, (batch, extra) in enumerate(cases):
        inputs = ranker_inputs(model, batch, extra=extra, seed=seed)
        case = f"batch {batch}, {extra} extra items"
        with torch.no_grad():
            expected = [t.numpy() for t in model(*(torch.from_numpy(v) for v in inputs.values()))]
        scores, indices, mass = session.run(["scores", "indices", "extra_mass"], inputs)
        diff = float(np.abs(scores - expected[0]).max())
        worst = max(worst, diff)
        if diff > SCORE_TOLERANCE:
            problems.append(f"fp32 {case}: max |score diff| {diff:.2e} > {SCORE_TOLERANCE}")
        mass_diff = _mass_error(mass, expected[2])
        worst_mass = max(worst_mass, mass_diff)
        if mass_diff > MASS_TOLERANCE:
            problems.append(f"fp32 {case}: extra items' probability mass off by {mass_diff:.2e}")
        strict.append(float((indices[:, :10] == expected[1][:, :10]).all(axis=1).mean()))
        same = _identical_up_to_ties(indices[:, :10], expected[0], expected[1])
        identical.append(same)
        if same < TOP10_IDENTICAL:
            problems.append(f"fp32 {case}: top-10 identical for {same:.2%} of users")
        if np.isin(indices, inputs["blocked_ids"][1:]).any():
            problems.append(f"fp32 {case}: a blocked item was ranked")
        if half is not None:
            _, half_indices, half_mass = half.run(["scores", "indices", "extra_mass"], inputs)
            overlap.append((topk_overlap(expected[1][:, :10], half_indices[:, :10]), batch))
            worst_half_mass = max(worst_half_mass, _mass_error(half_mass, expected[2]))
    # fp16 over every user of every case: one swap in a batch of one is 0.9 on its own
    pooled = sum(share * n for share, n in overlap) / max(1, sum(n for _, n in overlap))
    if overlap and pooled < FP16_TOP10_OVERLAP:
        problems.append(f"fp16: mean top-10 overlap {pooled:.4f} over every case's users")
    if worst_half_mass > FP16_MASS_TOLERANCE:
        problems.append(f"fp16: extra items' probability mass off by {worst_half_mass:.2e}")
    if problems:
        raise ModelExportError("ONNX ranker parity failed:\n  " + "\n  ".join(problems))
    report: dict[str, Any] = {
        "cases": [list(c) for c in cases],
        "max_abs_score_diff": worst,
        "max_extra_mass_error": worst_mass,
        "top10_identical": min(identical),
        "top10_identical_strict": min(strict),
    }
    if overlap:
        report["fp16_top10_overlap"] = pooled
        report["fp16_top10_overlap_by_case"] = [share for share, _ in overlap]
        report["fp16_max_extra_mass_error"] = worst_half_mass
    return report


def _mass_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference of two ``extra_mass`` outputs, relative to their sum where over 1."""
    if got.shape != expected.shape:
        return float("inf")
    if not len(expected):
        return 0.0
    return float(np.abs(got - expected).max() / max(1.0, float(expected.sum())))


def _identical_up_to_ties(
    got: np.ndarray, reference_scores: np.ndarray, reference_indices: np.ndarray
) -> float:
    """Share of rows whose list equals the reference's, items within a tie swapped allowed.

    Position ``j`` agrees when the item placed there has, in the reference, the score the
    reference has at ``j`` (within ``TIE_TOLERANCE``).
    """
    agree = 0
    for row, items in enumerate(got):
        score_of = dict(
            zip(reference_indices[row].tolist(), reference_scores[row].tolist(), strict=True)
        )
        wanted = reference_scores[row, : len(items)]
        placed = np.array([score_of.get(i, -np.inf) for i in items.tolist()])
        agree += bool(np.all(np.abs(placed - wanted) <= TIE_TOLERANCE))
    return agree / len(got)


def query_texts(batch: int, seed: int) -> list[str]:
    """Queries of varied length, including empty ones (all padding after tokenisation)."""
    rng = np.random.default_rng(seed)
    words = ["star", "wars", "toy", "story", "comedy", "romance", "1995", "dark", "knight", "é"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(batch)]
    texts[0] = ""
    return texts


def check_query_encoder(
    tower: nn.Module, tokenizer: Tokenizer, onnx_path: Path, batches: Sequence[int] = (1, 64)
) -> dict[str, Any]:
    """Compare the query encoder with PyTorch on padded variable-length query batches.

    Raises:
        ModelExportError: naming each batch whose vectors differ beyond tolerance.
    """
    session = _session(onnx_path)
    problems, worst = [], 0.0
    for seed, batch in enumerate(batches):
        inputs = tokenize(tokenizer, query_texts(batch, seed))
        if batch > 1:  # one row entirely padding: an empty query in a batch of longer ones
            inputs["attention_mask"][1] = 0
            inputs["input_ids"][1] = 0
        with torch.no_grad():
            expected = tower(
                *(torch.from_numpy(inputs[k]) for k in ("input_ids", "attention_mask"))
            )
        (got,) = session.run(["query_vecs"], inputs)
        diff = float(np.abs(got - expected.numpy()).max())
        worst = max(worst, diff)
        if diff > SCORE_TOLERANCE:
            problems.append(f"batch {batch}: max |vector diff| {diff:.2e} > {SCORE_TOLERANCE}")
    if problems:
        raise ModelExportError("ONNX query encoder parity failed:\n  " + "\n  ".join(problems))
    return {"batches": list(batches), "max_abs_vector_diff": worst}


def check_query_encoder_int8(
    model: SequenceRanker,
    ranker_path: Path,
    encoder_path: Path,
    int8_path: Path,
    tokenizer: Tokenizer,
    batch: int = 512,
) -> dict[str, Any]:
    """The int8 query encoder against the fp32 one where it matters: the ranker's top-10s.

    Users of :func:`ranker_inputs` (about a fifth of their events are searches, each with its
    own query) are ranked by the fp32 ONNX ranker twice, once with each encoder's vectors.
    ``passed`` says whether the overlap meets ``INT8_QUERY_TOP10_OVERLAP``.
    """
    inputs = ranker_inputs(model, batch, seed=len(CASES))
    tokens = tokenize(tokenizer, query_texts(len(inputs["query_table"]) - 1, len(CASES)))
    ranker = _session(ranker_path)
    vectors, tops = [], []
    for path in (encoder_path, int8_path):
        (rows,) = _session(path).run(["query_vecs"], tokens)
        table = np.vstack([np.zeros((1, rows.shape[1]), np.float32), rows])
        (indices,) = ranker.run(["indices"], {**inputs, "query_table": table})
        vectors.append(rows)
        tops.append(indices[:, :10])
    reference, quantised = vectors
    cosine = (unit_rows(reference) * unit_rows(quantised)).sum(axis=1)
    overlap = topk_overlap(*tops)
    return {
        "passed": overlap >= INT8_QUERY_TOP10_OVERLAP,
        "top10_overlap": overlap,
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
    }


def check_item_tower(
    model: SequenceRanker,
    ranker_path: Path,
    encoder_path: Path,
    tokenizer: Tokenizer,
    id_vectors: np.ndarray,
    catalogue: Sequence[Any],
    batch: int = 64,
) -> dict[str, Any]:
    """The item tower as the worker runs it: id part + ONNX text vector, into the ONNX ranker.

    1. Trained items re-embedded from their texts reproduce the trained vectors.
    2. The same items offered as extra items (ONNX tower) to the ONNX ranker rank as the
       PyTorch ranker does with PyTorch's vectors for them.

    ``catalogue`` holds the trained items (``item_id``, ``text``) in model order.

    Raises:
        ModelExportError: naming the figure outside the contract.
    """
    model.eval()
    texts = [item.text for item in catalogue]
    encoder = _session(encoder_path)
    onnx_text = np.concatenate(
        [
            encoder.run(["query_vecs"], tokenize(tokenizer, texts[i : i + 256]))[0]
            for i in range(0, len(texts), 256)
        ]
    )
    rebuilt = id_vectors[0] + onnx_text  # every item as if it were new: id part of row 0
    with torch.no_grad():
        trained = model.query_vectors(model.item_text[1:]).numpy()
        trained[:, : model.config.dim] = model.item_matrix()[1:].numpy()
        as_new = id_vectors[1:] + onnx_text
    vector_diff = float(np.abs(as_new - trained).max())
    problems = []
    if vector_diff > ITEM_VECTOR_TOLERANCE:
        problems.append(f"trained item vectors rebuilt from text differ by {vector_diff:.2e}")
    inputs = ranker_inputs(model, batch, extra=len(texts), seed=len(CASES) + 1)
    inputs["extra_items"] = rebuilt.astype(np.float32)
    with torch.no_grad():
        reference = (
            torch.from_numpy(id_vectors[0]) + model.query_vectors(model.item_text[1:])
        ).numpy()
        torch_inputs = {**inputs, "extra_items": reference}
        expected = [t.numpy() for t in model(*(torch.from_numpy(v) for v in torch_inputs.values()))]
    scores, indices = _session(ranker_path).run(["scores", "indices"], inputs)
    overlap = topk_overlap(expected[1][:, :10], indices[:, :10])
    score_diff = float(np.abs(scores - expected[0]).max())
    if overlap < INT8_QUERY_TOP10_OVERLAP:
        problems.append(f"extra items from the ONNX tower: top-10 overlap {overlap:.4f}")
    if problems:
        raise ModelExportError("item tower parity failed:\n  " + "\n  ".join(problems))
    return {
        "items": len(texts),
        "max_abs_trained_vector_diff": vector_diff,
        "max_abs_score_diff": score_diff,
        "top10_overlap": overlap,
    }
