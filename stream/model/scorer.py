"""Scoring through ONNX Runtime: user contexts in, ranked item lists out.

No Faust here: the worker and the replay tool share this code. :meth:`Scorer.score` is
blocking and thread-safe; the worker calls it from an executor, never on the event loop.
The items scored are the scorer's current :class:`~stream.catalogue.items.ItemSet`:
:meth:`Scorer.follow` builds a new one from the live catalogue (embedding new texts with the
item tower) and swaps it in; each batch keeps the one it started with. Items added after
export get a score bias from their clicks (:mod:`stream.model.feedback`): :meth:`Scorer.observe`
counts each click, :meth:`Scorer.score` each list.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stream.catalogue.items import Catalogue, ItemSet, build_item_set, days
from stream.contracts.manifest import (
    DAY_MS,
    EVENT_TYPE_IDS,
    ITEM_ID_VECTORS,
    ITEM_VECTORS,
    PAD_INDEX,
    QUERY_ENCODER,
    QUERY_ENCODER_INT8,
    RANKER,
    RANKER_FP16,
    RANKER_OUTPUTS,
    TOKENIZER,
    ModelManifest,
    load_manifest,
)
from stream.contracts.records import Event
from stream.errors import ModelLoadError
from stream.model.diversity import load_item_vectors, rerank, unit_rows
from stream.model.feedback import ItemFeedback
from stream.model.queries import QueryEncoder, load_tokenizer
from stream.settings import ExcludePolicy, Settings
from stream.state.context import UserContext

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: The ranker's output names, in the order :meth:`Scorer.run` returns them.
OUTPUT_NAMES = tuple(spec.name for spec in RANKER_OUTPUTS)
#: Scores at or below this are masked items (purchased/seen/blocked/padding), never listed.
MASKED_SCORE = -1e4
#: Texts embedded per item tower call when the catalogue changes.
EMBED_BATCH = 256
#: A week, in ms: the default half-life of new items' click feedback.
WEEK_MS = 7 * DAY_MS
#: Ranker inputs copied to the device once per item set rather than per batch.
DEVICE_RESIDENT = ("extra_items", "blocked_ids", "item_added")

RankedList = list[tuple[str, float]]


def cuda_driver_present() -> bool:
    """Whether an NVIDIA driver is loadable (the CUDA provider cannot work without one)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def choose_providers(requested: str) -> list[str]:
    """Execution providers to ask ONNX Runtime for, best first.

    ``auto`` asks for CUDA only where ORT was built with it and a driver is present;
    ``cuda`` always asks (and :class:`Scorer` warns if ORT falls back to CPU).
    """
    if requested == "cpu":
        return [CPU]
    cuda_built = CUDA in ort.get_available_providers()
    if requested == "cuda" or (cuda_built and cuda_driver_present()):
        return [CUDA, CPU]
    return [CPU]


def exclude_matrix(rows: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
    """The ranker's ``exclude_ids`` input: each row's item indices, right-padded with 0.

    At least one column wide (a batch where nobody excludes anything still has the input).
    """
    width = max(1, max((len(r) for r in rows), default=0))
    matrix = np.full((len(rows), width), PAD_INDEX, dtype=np.int64)
    for row, items in enumerate(rows):
        matrix[row, : len(items)] = items
    return matrix


def open_session(path: Path, providers: list[str], threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session with the worker's options (full graph optimisation)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle ORT threads would spin on cores the event loop needs; they sleep instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own untyped errors on bad graphs.
        msg = f"ONNX Runtime cannot load {path}: {exc}; re-export the model directory"
        raise ModelLoadError(msg) from exc


class Scorer:
    """One ONNX Runtime session over a verified model directory.

    Create it once per process, after start-up (never before a fork).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        provider: str = "auto",
        intra_op_threads: int = 0,
        top_k: int = 20,
        exclude: ExcludePolicy = "purchased",
        query_cache_size: int = 10_000,
        query_precision: str = "auto",
        diversity: float = 0.0,
        io_binding: bool | None = None,
        new_item_feedback: bool = True,
        new_item_prior_clicks: float = 1.0,
        new_item_half_life_ms: float = WEEK_MS,
    ) -> None:
        self.manifest: ModelManifest = load_manifest(model_dir)
        if top_k > self.manifest.max_k:
            msg = (
                f"STREAMREC_TOP_K={top_k} exceeds the model's max_k={self.manifest.max_k}; "
                "lower it or export the model with a larger max_k"
            )
            raise ModelLoadError(msg)
        self.top_k = top_k
        self.exclude = exclude
        self.diversity = diversity
        self.item_vectors: np.ndarray | None = None
        if diversity > 0:
            self.item_vectors = load_item_vectors(
                self._file(model_dir, ITEM_VECTORS), len(self.manifest.items)
            )
        self.id_vectors = np.load(self._file(model_dir, ITEM_ID_VECTORS), allow_pickle=False)
        #: The items scored now (swapped whole by :meth:`follow`).
        self.items = ItemSet.trained(
            self.manifest.items, self.manifest.item_added_ms, self.manifest.query_dim
        )
        self._unit_extra: tuple[ItemSet, np.ndarray] | None = None
        #: Click feedback of the items added after export (``None``: off).
        self.feedback = (
            ItemFeedback(new_item_prior_clicks, new_item_half_life_ms)
            if new_item_feedback
            else None
        )
        self._feedback_slots: tuple[ItemSet, np.ndarray] | None = None
        self._on_device: tuple[list[np.ndarray], dict[str, Any]] | None = None
        self._history = self.manifest.history_length
        providers = choose_providers(provider)
        # The fp16 ranker where a GPU runs it, the fp32 one on CPU.
        role = RANKER_FP16 if CUDA in providers and RANKER_FP16 in self.manifest.files else RANKER
        self.session = open_session(self._file(model_dir, role), providers, intra_op_threads)
        if role == RANKER_FP16 and CUDA not in self.session.get_providers():
            role = RANKER  # CUDA could not start: fp16 on CPU would be slow and imprecise
            self.session = open_session(self._file(model_dir, role), [CPU], intra_op_threads)
        self.ranker_role = role
        self.providers: list[str] = self.session.get_providers()
        on_cuda = self.providers[0] == CUDA
        self._device = "cuda" if on_cuda else "cpu"
        #: Whether :meth:`run` binds inputs and outputs (on by default where CUDA runs).
        self.io_binding = on_cuda if io_binding is None else io_binding
        if provider == "cuda" and CUDA not in self.providers:
            log.warning("CUDA was requested but is unavailable here; scoring on CPU instead")
        self.queries: QueryEncoder | None = None
        #: Which query encoder file encodes search queries (``None``: the model has none).
        self.query_role: str | None = None
        tokenizer_path = self.manifest.path(model_dir, TOKENIZER)
        if QUERY_ENCODER in self.manifest.files and tokenizer_path is not None:
            self.query_role = self._query_role(query_precision, on_cuda)
            self.queries = QueryEncoder(
                open_session(self._file(model_dir, self.query_role), providers, intra_op_threads),
                load_tokenizer(tokenizer_path, self.manifest.query_max_tokens),
                cache_size=query_cache_size,
            )
        log.info(
            "model %s loaded: %d items, %s on %s, query encoder %s",
            self.model_version,
            len(self.manifest.items),
            self.ranker_role,
            self.providers,
            self.query_role or "none",
        )

    def _query_role(self, precision: str, on_cuda: bool) -> str:
        """The query encoder for ``precision``: int8 on CPU hosts under ``auto``."""
        has_int8 = QUERY_ENCODER_INT8 in self.manifest.files
        if precision == "int8" and not has_int8:
            msg = (
                "STREAMREC_QUERY_PRECISION=int8, but this model has no int8 query encoder; "
                "re-export it with this model_export (make model) or set it to auto"
            )
            raise ModelLoadError(msg)
        if precision == "int8" or (precision == "auto" and has_int8 and not on_cuda):
            return QUERY_ENCODER_INT8
        return QUERY_ENCODER

    @classmethod
    def from_settings(cls, settings: Settings) -> Scorer:
        """The scorer a worker (or a replay) configured by ``settings`` uses."""
        return cls(
            settings.model_dir,
            provider=settings.provider,
            intra_op_threads=settings.intra_op_threads,
            top_k=settings.top_k,
            exclude=settings.exclude,
            query_cache_size=settings.query_cache_size,
            query_precision=settings.query_precision,
            diversity=settings.diversity,
            new_item_feedback=settings.new_item_feedback,
            new_item_prior_clicks=settings.new_item_prior_clicks,
            new_item_half_life_ms=settings.new_item_half_life_s * 1000,
        )

    def _file(self, model_dir: str | Path, role: str) -> Path:
        path = self.manifest.path(model_dir, role)
        if path is None:
            msg = f"model directory {model_dir} has no {role} file; re-export it"
            if role == ITEM_VECTORS:
                msg += " with this model_export, or set STREAMREC_DIVERSITY=0"
            raise ModelLoadError(msg)
        return path

    @property
    def model_version(self) -> str:
        """Version string stamped on every list this scorer produces."""
        return self.manifest.model_version

    def item_index(self, item_id: str | None) -> int:
        """Model index of an item id now (0 for unknown or absent)."""
        return self.items.item_index(item_id)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The item tower's text part ``[len(texts), query_dim]``: ranker part, search part.

        Zeros for a model without text.
        """
        vectors = np.zeros((len(texts), self.manifest.query_dim), dtype=np.float32)
        if self.queries is None:
            return vectors
        for start in range(0, len(texts), EMBED_BATCH):
            chunk = texts[start : start + EMBED_BATCH]
            vectors[start : start + len(chunk)] = self.queries.encode_uncached(chunk)
        return vectors

    def follow(self, catalogue: Catalogue) -> ItemSet:
        """Score the items ``catalogue`` says exist from the next batch on (blocking).

        New texts are embedded by the item tower in batches; texts embedded before are reused.
        """
        self.items = build_item_set(
            self.manifest.items,
            self.manifest.item_texts,
            self.manifest.item_added_ms,
            self.id_vectors,
            catalogue,
            self.embed_texts,
            self.items,
        )
        return self.items

    def encode(
        self, contexts: Sequence[UserContext], items: ItemSet | None = None
    ) -> dict[str, np.ndarray]:
        """Build the ranker's input tensors for a batch of users over ``items`` (now's)."""
        items = items or self.items
        index = items.item_index
        batch, history = len(contexts), self._history
        item_ids = np.zeros((batch, history), dtype=np.int64)
        event_types = np.zeros((batch, history), dtype=np.int64)
        query_ids = np.zeros((batch, history), dtype=np.int64)
        event_ages = np.zeros((batch, history), dtype=np.float32)
        searches: list[tuple[int, int, str]] = []
        exclude_ids = exclude_matrix(
            [[index(i) for i in ctx.excluded_items(self.exclude)] for ctx in contexts]
        )
        for row, ctx in enumerate(contexts):
            recent = ctx.events[-history:]
            start = history - len(recent)  # left-padded: the newest event is last
            now = recent[-1].ts if recent else 0  # a list is made at its newest event
            for col, ev in enumerate(recent, start):
                item_ids[row, col] = index(ev.item_id)
                event_types[row, col] = EVENT_TYPE_IDS[ev.type]
                event_ages[row, col] = max(0, now - ev.ts) / 1000
                if ev.query:
                    searches.append((row, col, ev.query))
        query_table = np.zeros((1, self.manifest.query_dim), dtype=np.float32)
        if searches and self.queries is not None:
            vectors = self.queries.encode([q for _, _, q in searches])
            rows = {query: row for row, query in enumerate(vectors, start=1)}
            query_table = np.vstack([query_table, *vectors.values()])
            for row, col, query in searches:
                query_ids[row, col] = rows[query]
        return {
            "item_ids": item_ids,
            "event_types": event_types,
            "query_ids": query_ids,
            "query_table": query_table,
            "extra_items": items.extra,
            "extra_bias": self._extra_bias(items),
            "blocked_ids": items.blocked,
            "item_added": items.added_days,
            "user_days": days([ctx.events[-1].ts if ctx.events else 0 for ctx in contexts]),
            "event_ages": event_ages,
            "exclude_ids": exclude_ids,
        }

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the ranker on prepared inputs: (scores, indices, extra items' probability mass).

        Lists are best first; the mass is each extra item's probability summed over the batch.

        On CUDA the inputs and outputs go through an IO binding: one host-to-device copy
        per input, the outputs stay on the device until the top-k lists are copied back,
        and ORT allocates no intermediate host buffers. The extra items, blocked ids and
        items' added times are copied once per item set, not per batch (the extra items'
        biases change with every click: they go with each batch).
        """
        if not self.io_binding:
            scores, indices, mass = self.session.run(list(OUTPUT_NAMES), inputs)
            return scores, indices, mass
        binding = self.session.io_binding()  # one per call: scoring threads run concurrently
        for name, value in self._device_items(inputs).items():
            binding.bind_ortvalue_input(name, value)
        for name, array in inputs.items():
            if name not in DEVICE_RESIDENT:
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in OUTPUT_NAMES:
            binding.bind_output(name, self._device)
        self.session.run_with_iobinding(binding)
        scores, indices, mass = binding.copy_outputs_to_cpu()
        return scores, indices, mass

    def _device_items(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Device copies of an item set's arrays, made once and kept while it is current."""
        arrays = [inputs[name] for name in DEVICE_RESIDENT]
        cached = self._on_device
        if cached is None or any(a is not b for a, b in zip(cached[0], arrays, strict=True)):
            values = {
                name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self._device)
                for name, a in zip(DEVICE_RESIDENT, arrays, strict=True)
            }
            cached = (arrays, values)
            self._on_device = cached
        return cached[1]

    def decode(
        self,
        scores: np.ndarray,
        indices: np.ndarray,
        items: ItemSet | None = None,
        top_k: int | None = None,
    ) -> list[RankedList]:
        """Turn the ranker's outputs into ``top_k`` (item_id, score) lists, masked items dropped.

        ``top_k`` defaults to the scorer's (``STREAMREC_TOP_K``); at most the model's max_k.
        """
        top_k = top_k or self.top_k
        lists = []
        item_ids = (items or self.items).ids
        for row_scores, row_indices in zip(scores.tolist(), indices.tolist(), strict=True):
            ranked = [
                (item_ids[i], s)
                for s, i in zip(row_scores, row_indices, strict=True)
                if s > MASKED_SCORE and i != PAD_INDEX
            ]
            lists.append(ranked[:top_k])
        return lists

    def observe(self, event: Event) -> None:
        """Count a click for the click feedback of items added after export."""
        if self.feedback is not None and event.type == "click":
            tracked = self.items.item_index(event.item_id) > len(self.manifest.items)
            self.feedback.observe_click(event.item_id, event.ts, tracked=tracked)

    def _slots(self, items: ItemSet) -> np.ndarray:
        """The feedback slots of ``items``' extra items, looked up once per item set."""
        assert self.feedback is not None
        cached = self._feedback_slots
        if cached is None or cached[0] is not items:
            extra_ids = items.ids[len(self.manifest.items) + 1 :]
            cached = self._feedback_slots = (items, self.feedback.slots(extra_ids))
        return cached[1]

    def _extra_bias(self, items: ItemSet) -> np.ndarray:
        """Each extra item's click-feedback bias now (zeros with feedback off)."""
        if self.feedback is None or not items.num_extra:
            return np.zeros(items.num_extra, dtype=np.float32)
        return self.feedback.bias(self._slots(items))

    def score(self, contexts: Sequence[UserContext], top_k: int | None = None) -> list[RankedList]:
        """Rank items for each context (blocking; call from an executor in async code).

        Lists hold ``top_k`` items (the scorer's by default, at most the model's max_k).
        """
        top_k = top_k or self.top_k
        if not contexts:
            return []
        items = self.items  # the item set this batch is scored over, start to end
        scores, indices, mass = self.run(self.encode(contexts, items))
        if self.feedback is not None and items.num_extra:
            newest = max((ctx.events[-1].ts for ctx in contexts if ctx.events), default=0)
            self.feedback.record_lists(self._slots(items), mass, len(contexts), newest)
        if self.item_vectors is not None:
            valid = (scores > MASKED_SCORE) & (indices != PAD_INDEX)
            scores, indices = rerank(
                scores, indices, valid, self._diversity_vectors(items), top_k, self.diversity
            )
        return self.decode(scores, indices, items, top_k)

    def _diversity_vectors(self, items: ItemSet) -> np.ndarray:
        """Unit vectors of the trained items, then of ``items``' extra ones."""
        assert self.item_vectors is not None
        if not items.num_extra:
            return self.item_vectors
        cached = self._unit_extra
        if cached is None or cached[0] is not items:
            ranker_part = items.extra[:, : self.item_vectors.shape[1]]
            cached = (items, np.vstack([self.item_vectors, unit_rows(ranker_part)]))
            self._unit_extra = cached
        return cached[1]
