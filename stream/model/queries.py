"""Search queries to vectors: the exported query encoder, its tokenizer, and a cache.

Tokenisation is defined here once (``model_export`` trains and exports with the same code):
WordPiece from the model directory's ``tokenizer.json``, truncated to the manifest's
``query_max_tokens`` and right-padded to the longest query of the batch. Repeated queries
are served from an LRU cache, so the encoder runs only for queries not seen recently.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def load_tokenizer(path: str | Path, max_tokens: int) -> Tokenizer:
    """A WordPiece tokenizer that truncates to ``max_tokens`` and pads to the batch's longest."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a vocabulary entry
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, ``[len(texts), tokens]``)."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


class QueryEncoder:
    """Encodes query strings with an ONNX session; thread-safe, with a bounded LRU cache."""

    def __init__(
        self, session: ort.InferenceSession, tokenizer: Tokenizer, *, cache_size: int = 10_000
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def encode_uncached(self, queries: Sequence[str]) -> np.ndarray:
        """Vectors ``[len(queries), query_dim]`` straight from the encoder (no cache)."""
        (vectors,) = self.session.run(["query_vecs"], tokenize(self.tokenizer, queries))
        return np.asarray(vectors)

    def encode(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors of each distinct query in ``queries`` (cached ones are not re-encoded)."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for query in dict.fromkeys(queries):
                vector = self._cache.get(query)
                if vector is not None:
                    self._cache.move_to_end(query)
                    found[query] = vector
            self.hits += len(found)
        missing = [q for q in dict.fromkeys(queries) if q not in found]
        if not missing:
            return found
        vectors = self.encode_uncached(missing)
        with self._lock:
            self.misses += len(missing)
            for query, vector in zip(missing, vectors, strict=True):
                found[query] = vector
                self._cache[query] = vector
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found
