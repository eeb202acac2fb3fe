"""The model directory contract: ONNX files, tokenizer and ``manifest.json``, defined once.

A model directory holds the ranker (``ranker.onnx``, required), optionally its fp16 variant
for GPUs (``ranker.fp16.onnx``), the query encoder (``query_encoder.onnx``) with its
tokenizer (``tokenizer.json``) and optionally its int8 variant for CPUs
(``query_encoder.int8.onnx``), the item vectors for diversity re-ranking
(``item_vectors.npy``), the id part of each trained item's vector (``item_id_vectors.npy``:
the vector less its text's projection, for items whose text changes after export and, in
row 0, for new items), and
``manifest.json`` naming each file with its sha256 and each trained item with its text.

Format 5 (features ``streamrec.history/6``) answers searches: every query vector (and every
extra item's vector) is the ranker part (``query_dim - search_dim`` wide) then the search
part (``search_dim``, the fine-tuned MiniLM's unit vector), and the ranker adds to each item's
score its search term, the history's searches against the item's text, faded by the events
since each search and by the seconds since it (``event_ages``). It serves a living catalogue
as format 4 did: the vectors of items added after export (``extra_items``), a score bias for
each of them learnt from their clicks (``extra_bias``, :mod:`stream.model.feedback`) and the items
no list may hold (``blocked_ids``) are inputs, and each extra item's probability summed over
the batch (``extra_mass``), what the bias is fit against, an output. Directories of format 4
(no search term), 3 (no click feedback) and 2 (the item set baked into the graph) are
refused with a message to re-export.
``model_export`` writes it with :func:`write_manifest`; the worker and the replay tool read
it with :func:`load_manifest`, which refuses a directory whose format, feature set or file
hashes do not match.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.errors import ModelLoadError

FORMAT_VERSION = 5
MANIFEST_FILE = "manifest.json"
#: The input set the worker knows how to build from a :class:`~stream.state.context.UserContext`.
FEATURES = "streamrec.history/6"
#: Model index of an item: ``items[i]`` has index ``i + 1``; 0 is padding / unknown.
PAD_INDEX = 0
#: Milliseconds in a day: times reach the ranker in days since the epoch (item age).
DAY_MS = 86_400_000
#: Model ids of event types in ``event_types`` inputs (0 is padding).
EVENT_TYPE_IDS = {"click": 1, "search": 2, "purchase": 3}


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape (ints, or names of dynamic axes) of one graph tensor."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


#: Inputs and outputs a ``streamrec.history/6`` ranker must have. ``query_table`` holds the
#: query encoder outputs of a batch's distinct search queries (row 0 zeros); ``query_ids``
#: names, for each search event in the history, its row (0 elsewhere). ``extra_items`` are
#: the vectors of items ``len(items) + 1`` onwards (items the model was not exported with;
#: zero rows allowed) and ``extra_bias`` what each one's clicks add to its score;
#: ``blocked_ids`` are indices no user's list may hold (at least one
#: entry: 0, padding, when nothing is blocked); ``item_added`` says when each item (padding,
#: trained, extra) was added and ``user_days`` when each user's list is made, in days since
#: the epoch (the item-age terms); ``event_ages`` how many seconds before the list each
#: history event happened (the search term's fade; 0 for padding); ``exclude_ids`` are per
#: user. ``extra_mass`` is each extra
#: item's softmax probability (before its bias; excluded and blocked items have none)
#: summed over the batch's first 32 users and scaled to the batch.
RANKER_INPUTS = (
    TensorSpec("item_ids", "int64", ("batch", "history")),
    TensorSpec("event_types", "int64", ("batch", "history")),
    TensorSpec("query_ids", "int64", ("batch", "history")),
    TensorSpec("query_table", "float32", ("queries", "query_dim")),
    TensorSpec("extra_items", "float32", ("extra", "query_dim")),
    TensorSpec("extra_bias", "float32", ("extra",)),
    TensorSpec("blocked_ids", "int64", ("blocked",)),
    TensorSpec("item_added", "float32", ("items",)),
    TensorSpec("user_days", "float32", ("batch",)),
    TensorSpec("event_ages", "float32", ("batch", "history")),
    TensorSpec("exclude_ids", "int64", ("batch", "excluded")),
)
RANKER_OUTPUTS = (
    TensorSpec("scores", "float32", ("batch", "max_k")),
    TensorSpec("indices", "int64", ("batch", "max_k")),
    TensorSpec("extra_mass", "float32", ("extra",)),
)
#: The query encoder: token ids of padded queries in, rows for ``query_table`` out.
QUERY_INPUTS = (
    TensorSpec("input_ids", "int64", ("batch", "tokens")),
    TensorSpec("attention_mask", "int64", ("batch", "tokens")),
)
QUERY_OUTPUTS = (TensorSpec("query_vecs", "float32", ("batch", "query_dim")),)
#: Roles of the files a directory may hold; ``ranker`` is required.
RANKER = "ranker"
RANKER_FP16 = "ranker_fp16"
QUERY_ENCODER = "query_encoder"
#: The query encoder with int8 weights (dynamic quantisation), for CPU hosts.
QUERY_ENCODER_INT8 = "query_encoder_int8"
TOKENIZER = "tokenizer"
#: Unit item vectors ``[len(items) + 1, dim]`` (float32 ``.npy``, row 0 padding) that
#: diversity re-ranking compares (:mod:`stream.model.diversity`).
ITEM_VECTORS = "item_vectors"
#: The id part of each trained item's ranker vector, zero-padded to ``[len(items) + 1,
#: query_dim]`` (float32 ``.npy``); row 0 is the id part of an item the model never saw. An
#: item's ``extra_items`` row is its id part plus the query encoder's vector of its text (the
#: item tower): ranker part and search part.
ITEM_ID_VECTORS = "item_id_vectors"
FILE_ROLES = (
    RANKER,
    RANKER_FP16,
    QUERY_ENCODER,
    QUERY_ENCODER_INT8,
    TOKENIZER,
    ITEM_VECTORS,
    ITEM_ID_VECTORS,
)


@dataclass(frozen=True)
class ModelFile:
    """One file of the directory and its sha256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class ModelManifest:
    """Everything the worker needs to know about a model directory."""

    model_version: str
    files: dict[str, ModelFile]
    items: tuple[str, ...]
    history_length: int
    max_k: int
    query_dim: int
    query_max_tokens: int
    opset: int
    created_at: str
    #: The text each trained item was trained with (``items[i]`` has ``item_texts[i]``).
    item_texts: tuple[str, ...] = ()
    #: When each trained item was added (first seen in the training log), epoch ms.
    item_added_ms: tuple[int, ...] = ()
    #: Width of the search part at the end of each query vector (0: no search term).
    search_dim: int = 0
    format_version: int = FORMAT_VERSION
    features: str = FEATURES
    inputs: tuple[TensorSpec, ...] = RANKER_INPUTS
    outputs: tuple[TensorSpec, ...] = RANKER_OUTPUTS
    event_types: dict[str, int] = field(default_factory=lambda: dict(EVENT_TYPE_IDS))
    versions: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def path(self, model_dir: str | Path, role: str) -> Path | None:
        """Where the file of ``role`` lives, or ``None`` if this directory has none."""
        entry = self.files.get(role)
        return None if entry is None else Path(model_dir) / entry.file

    def to_json(self) -> bytes:
        """Serialise as written to ``manifest.json``."""
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(model_dir: Path, manifest: ModelManifest) -> Path:
    """Write ``manifest.json`` next to the ONNX file it describes."""
    path = Path(model_dir) / MANIFEST_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(manifest.to_json())
    tmp.replace(path)
    return path


def load_manifest(model_dir: str | Path, *, verify_hash: bool = True) -> ModelManifest:
    """Read and check a model directory.

    Raises:
        ModelLoadError: naming the file and what is wrong with it.
    """
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        msg = (
            f"no {MANIFEST_FILE} in model directory {str(model_dir)!r}: build one with "
            f"`make model` (python -m model_export build --out {model_dir}) "
            "or set STREAMREC_MODEL_DIR"
        )
        raise ModelLoadError(msg)
    try:
        body = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        msg = f"{path} is not valid JSON ({exc}); rebuild the model directory"
        raise ModelLoadError(msg) from exc
    if not isinstance(body, dict) or body.get("format_version") != FORMAT_VERSION:
        found = body.get("format_version") if isinstance(body, dict) else type(body).__name__
        msg = (
            f"{path}: format_version {found!r} is not supported (this streamrec reads "
            f"{FORMAT_VERSION}, whose ranker answers searches with a query–item term beside the "
            "live catalogue's items and their click feedback); "
            "re-export the model with this version of model_export: `make model`, or "
            f"python -m model_export export --checkpoint CHECKPOINT --out {model_dir}"
        )
        raise ModelLoadError(msg)
    try:
        manifest = _from_dict(body)
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{path}: malformed manifest ({type(exc).__name__}: {exc}); rebuild it"
        raise ModelLoadError(msg) from exc
    if manifest.features != FEATURES:
        msg = (
            f"{path}: feature set {manifest.features!r} is not {FEATURES!r}; re-export the "
            "model with this version of model_export (make model)"
        )
        raise ModelLoadError(msg)
    _check_names(path, "inputs", manifest.inputs, RANKER_INPUTS)
    _check_names(path, "outputs", manifest.outputs, RANKER_OUTPUTS)
    if (QUERY_ENCODER in manifest.files) != (TOKENIZER in manifest.files):
        msg = f"{path}: a query encoder needs its tokenizer and vice versa; re-export"
        raise ModelLoadError(msg)
    for entry in manifest.files.values():
        _check_file(path, model_dir / entry.file, entry.sha256, verify_hash=verify_hash)
    return manifest


def _check_file(manifest_path: Path, path: Path, sha256: str, *, verify_hash: bool) -> None:
    if not path.is_file():
        msg = f"{path} named by {manifest_path} does not exist; re-export the model directory"
        raise ModelLoadError(msg)
    if verify_hash:
        actual = sha256_file(path)
        if actual != sha256:
            msg = (
                f"{path} has sha256 {actual}, but {manifest_path} expects {sha256}: "
                "the file was changed or truncated; re-export the model directory"
            )
            raise ModelLoadError(msg)


def _from_dict(body: dict[str, Any]) -> ModelManifest:
    specs = {
        key: tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in body[key])
        for key in ("inputs", "outputs")
    }
    files = {
        str(role): ModelFile(str(entry["file"]), str(entry["sha256"]))
        for role, entry in dict(body["files"]).items()
    }
    manifest = ModelManifest(
        model_version=str(body["model_version"]),
        files=files,
        items=tuple(str(i) for i in body["items"]),
        history_length=int(body["history_length"]),
        max_k=int(body["max_k"]),
        query_dim=int(body["query_dim"]),
        query_max_tokens=int(body["query_max_tokens"]),
        opset=int(body["opset"]),
        created_at=str(body["created_at"]),
        item_texts=tuple(str(t) for t in body["item_texts"]),
        item_added_ms=tuple(int(t) for t in body["item_added_ms"]),
        search_dim=int(body["search_dim"]),
        format_version=int(body["format_version"]),
        features=str(body["features"]),
        inputs=specs["inputs"],
        outputs=specs["outputs"],
        event_types=dict(body["event_types"]),
        versions=dict(body.get("versions", {})),
        training=dict(body.get("training", {})),
    )
    if not 0 <= manifest.search_dim < manifest.query_dim:
        msg = "search_dim must be at least 0 and below query_dim"
        raise ValueError(msg)
    if not manifest.items or manifest.history_length < 1 or manifest.max_k < 1:
        msg = "items, history_length and max_k must be non-empty / positive"
        raise ValueError(msg)
    if not len(manifest.item_texts) == len(manifest.item_added_ms) == len(manifest.items):
        msg = "item_texts and item_added_ms must give one entry per item"
        raise ValueError(msg)
    if RANKER not in files or set(files) - set(FILE_ROLES):
        msg = f"files must include {RANKER!r} and only roles {FILE_ROLES}"
        raise ValueError(msg)
    for entry in files.values():
        if Path(entry.file).name != entry.file:
            msg = f"file {entry.file!r} must be a file name inside the directory"
            raise ValueError(msg)
    return manifest


def _check_names(
    path: Path, kind: str, found: tuple[TensorSpec, ...], wanted: tuple[TensorSpec, ...]
) -> None:
    missing = {s.name for s in wanted} - {s.name for s in found}
    if missing:
        msg = f"{path}: {kind} lack {sorted(missing)} required by {FEATURES}"
        raise ModelLoadError(msg)
