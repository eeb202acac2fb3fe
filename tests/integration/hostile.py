"""A reproducible corpus of hostile event messages, each with the reason the worker must give."""

from __future__ import annotations

import random

import orjson

GOOD = {"v": 1, "event_id": "e", "user_id": "u", "type": "click", "item_id": "1", "ts": 1_000}


HUGE_EVERY = 1_000  # one message in this many is a 1.2 MB one
HUGE_BYTES = 1_200_000


def _event(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def hostile_messages(count: int, seed: int = 0) -> list[tuple[bytes | None, bytes, str | None]]:
    """``count`` bad messages ``(key, value, reason)``, cycling through every kind.

    One in :data:`HUGE_EVERY` is a 1.2 MB event instead: producing the corpus needs a
    ``max_request_size`` above that.

    ``reason`` is the dead-letter reason the worker must give; ``None`` for random bytes,
    whose reason depends on what the bytes happen to be.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    kinds = [
        lambda i: (b"u", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), None),
        lambda i: (b"u", b'{"event_id": "x", "user_id": "u", "type": "cl', "not_json"),
        lambda i: (b"u", b'{"user_id": "\\ud800", "x": 1}', "not_json"),  # lone surrogate
        lambda i: (b"u", _nested(5_000), "not_json"),  # deeper than any parser allows
        lambda i: (b"u", b'"just a string"', "not_an_object"),
        lambda i: (b"u", _event(ts="yesterday"), "bad_ts"),
        lambda i: (b"u", _event(ts=-1), "bad_ts"),
        lambda i: (b"u", _event(ts=10**17), "bad_ts"),  # far future (ms)
        lambda i: (b"u", _event(ts=1.5), "bad_ts"),
        lambda i: (b"u", _event(type="view"), "bad_type"),
        lambda i: (b"u", _event(type=None), "bad_type"),
        lambda i: (b"u", _event(user_id=_DROP), "missing_user_id"),
        lambda i: (b"u", _event(event_id=_DROP), "missing_event_id"),
        lambda i: (b"u", _event(item_id=_DROP), "missing_item_id"),
        lambda i: (b"u", _event(item_id=["1"]), "bad_item_id"),
        lambda i: (b"u", _event(type="search", item_id=_DROP, query="  "), "empty_query"),
        lambda i: (b"u", _event(type="search", item_id=_DROP, query=""), "empty_query"),
        lambda i: (b"u", _event(type="search", item_id=_DROP), "missing_query"),
        lambda i: (b"u", _event(extra={"a": [1, 2]}), "unknown_field"),
        lambda i: (b"u", _event(v=2), "unsupported_version"),
        lambda i: (b"u" * 10_240, _event(user_id="u" * 10_240), "bad_user_id"),
        lambda i: (b"other", _event(), "key_mismatch"),
        lambda i: (None, _event(), "key_mismatch"),
        lambda i: (b"u", b"", "empty_message"),
        lambda i: (b"u", _event(item_id="x" * 70_000), "too_large"),
    ]
    messages = []
    for i in range(count):
        key, value, reason = kinds[i % len(kinds)](i)
        if i % HUGE_EVERY == HUGE_EVERY - 1:  # past Kafka's default 1 MB message limit
            key, value, reason = b"u", _event(item_id="x" * HUGE_BYTES), "too_large"
        messages.append((key, value, reason))
    return messages
