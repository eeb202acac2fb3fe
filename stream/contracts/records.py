"""Wire contracts, defined once: event, catalogue record, list, dead letter, search result.

Each contract is versioned (``v``) and has a JSON Schema in ``stream/contracts/schemas/``,
reproduced in docs/contracts.md. The worker validates events with :func:`parse_event` (hand-written
for speed; a test checks it agrees with the schema) and serialises with orjson.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream.errors import InvalidEvent, InvalidRequest
from stream.settings import Settings

#: The contracts' JSON Schemas, shipped in the wheel (docs/contracts.md reproduces them).
SCHEMAS_DIR = Path(__file__).with_name("schemas")

EVENT_VERSION = 1
CATALOGUE_VERSION = 1
RECOMMENDATION_VERSION = 1
#: A list scored inside an experiment: version 1 plus ``experiment`` and ``arm``.
EXPERIMENT_RECOMMENDATION_VERSION = 2
DEAD_LETTER_VERSION = 1
SEARCH_RESULT_VERSION = 1

EVENT_TYPES = ("click", "search", "purchase")
_EVENT_FIELDS = frozenset({"v", "event_id", "user_id", "type", "item_id", "query", "ts"})
#: Upper bound on ``ts`` (2100-01-01 in epoch ms); anything later is a unit mistake.
MAX_TS_MS = 4_102_444_800_000
_CATALOGUE_FIELDS = frozenset({"v", "item_id", "text", "available", "ts", "added_ts"})
#: Longest accepted catalogue text.
MAX_TEXT_CHARS = 4096
#: Bytes of an offending message kept in a dead letter.
DEAD_LETTER_PAYLOAD_BYTES = 16_384
#: The contracts' one rule for ids: no control character (Unicode category Cc, escaped as
#: JSON Schema writes it); every other character is allowed (non-breaking spaces, emoji
#: joiners, right-to-left text). Every id's ``pattern`` in ``stream/contracts/schemas`` is
#: :data:`ID_PATTERN`, which means the same in ECMA-262 and Python (no ``$``, which Python
#: lets match before a final newline); tests/stream/contracts/test_records.py checks both agree.
CONTROL_CHARACTERS = "\\u0000-\\u001F\\u007F-\\u009F"
ID_PATTERN = f"^(?![\\s\\S]*[{CONTROL_CHARACTERS}])"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied while parsing events (from the settings)."""

    max_event_bytes: int = 65536
    max_id_chars: int = 256
    max_query_chars: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The worker's limits."""
        return cls(settings.max_event_bytes, settings.max_id_chars, settings.max_query_chars)


@dataclass(frozen=True, slots=True)
class Event:
    """One user-behaviour event (contract ``event`` v1)."""

    event_id: str
    user_id: str
    type: str
    ts: int
    item_id: str | None = None
    query: str | None = None

    def to_json(self) -> bytes:
        """Serialise in the wire contract (optional fields omitted when absent)."""
        body: dict[str, Any] = {
            "v": EVENT_VERSION,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "type": self.type,
            "ts": self.ts,
        }
        if self.item_id is not None:
            body["item_id"] = self.item_id
        if self.query is not None:
            body["query"] = self.query
        return orjson.dumps(body)

    def to_message(self) -> tuple[bytes, bytes]:
        """``(key, value)`` as produced to the events topic: keyed by the user id."""
        return self.user_id.encode(), self.to_json()


def parse_event(raw: bytes | None, key: bytes | None = None, limits: Limits = Limits()) -> Event:
    """Validate one message against the event contract.

    Args:
        raw: the message value.
        key: the message key, which must equal ``user_id`` (partitioning); ``None`` skips
            the check (events read from files have no key).
        limits: size limits.

    Raises:
        InvalidEvent: with a short machine-readable ``reason`` and a human detail.
    """
    if raw is None or len(raw) == 0:
        raise InvalidEvent("empty_message")
    body = _object(raw, limits, _EVENT_FIELDS, EVENT_VERSION)
    event_id = _id(body, "event_id", limits.max_id_chars)
    user_id = _id(body, "user_id", limits.max_id_chars)
    kind = body.get("type")
    if kind not in EVENT_TYPES:
        raise InvalidEvent("bad_type", repr(kind)[:50])
    ts = _ts(body)
    # search needs a query, click and purchase an item; the other field is optional.
    query = _query(body, limits.max_query_chars) if kind == "search" or "query" in body else None
    item_id = (
        _id(body, "item_id", limits.max_id_chars) if kind != "search" or "item_id" in body else None
    )
    if key is not None and key != user_id.encode():
        raise InvalidEvent("key_mismatch", "the message key must be the user_id")
    return Event(event_id=event_id, user_id=user_id, type=kind, ts=ts, item_id=item_id, query=query)


@dataclass(frozen=True, slots=True)
class CatalogueRecord:
    """One item of the live catalogue (contract ``catalogue`` v1)."""

    item_id: str
    text: str
    ts: int
    available: bool = True
    added_ts: int | None = None

    def to_json(self) -> bytes:
        """Serialise in the wire contract (``added_ts`` omitted when absent)."""
        body: dict[str, Any] = {
            "v": CATALOGUE_VERSION,
            "item_id": self.item_id,
            "text": self.text,
            "available": self.available,
            "ts": self.ts,
        }
        if self.added_ts is not None:
            body["added_ts"] = self.added_ts
        return orjson.dumps(body)

    def to_message(self) -> tuple[bytes, bytes]:
        """``(key, value)`` as produced to the catalogue topic: keyed by the item id."""
        return self.item_id.encode(), self.to_json()


def parse_catalogue(
    raw: bytes | None, key: bytes | None, limits: Limits = Limits()
) -> CatalogueRecord | str:
    """Validate one catalogue message; a removal (null value) returns the removed item's id.

    Raises:
        InvalidEvent: with a machine-readable ``reason``, as for events.
    """
    if raw is None:
        if not key:
            raise InvalidEvent("missing_key", "a removal (null value) needs the item id as key")
        return _key_id(key, limits.max_id_chars)
    body = _object(raw, limits, _CATALOGUE_FIELDS, CATALOGUE_VERSION)
    item_id = _id(body, "item_id", limits.max_id_chars)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
        raise InvalidEvent("bad_text", f"text must be 1..{MAX_TEXT_CHARS} characters, not blank")
    available = body.get("available", True)
    if not isinstance(available, bool):
        raise InvalidEvent("bad_available", "available must be true or false")
    ts = _ts(body)
    added_ts = _ts(body, "added_ts") if "added_ts" in body else None
    if key is not None and key != item_id.encode():
        raise InvalidEvent("key_mismatch", "the message key must be the item_id")
    return CatalogueRecord(
        item_id=item_id, text=text, ts=ts, available=available, added_ts=added_ts
    )


def _object(raw: bytes, limits: Limits, fields: frozenset[str], version: int) -> dict[str, Any]:
    """The message as a JSON object of known ``fields`` and contract ``version`` (``v``)."""
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes > {limits.max_event_bytes}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:200]) from None
    if not isinstance(body, dict):
        raise InvalidEvent("not_an_object", type(body).__name__)
    extra = body.keys() - fields
    if extra:
        raise InvalidEvent("unknown_field", ",".join(sorted(extra))[:200])
    found = body.get("v", version)
    if found != version or isinstance(found, bool):
        raise InvalidEvent("unsupported_version", repr(found)[:50])
    return body


def _key_id(key: bytes, max_chars: int) -> str:
    try:
        item_id = key.decode()
    except UnicodeDecodeError:
        raise InvalidEvent("bad_key", "the key must be the item id in UTF-8") from None
    return _id({"item_id": item_id}, "item_id", max_chars)


def _ts(body: dict[str, Any], name: str = "ts") -> int:
    ts = body.get(name)
    if isinstance(ts, float) and ts.is_integer():  # JSON Schema's integer: 1.0 and 1e3 too
        ts = int(ts)
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise InvalidEvent(
            f"bad_{name}", f"{name} must be an integer (epoch ms), got {type(ts).__name__}"
        )
    if not 0 <= ts <= MAX_TS_MS:
        raise InvalidEvent(f"bad_{name}", f"{name} {ts} outside 0..{MAX_TS_MS} (epoch ms)")
    return ts


def _query(body: dict[str, Any], max_chars: int) -> str:
    query = body.get("query")
    if query is None:
        raise InvalidEvent("missing_query", "search events need a query")
    if not isinstance(query, str):
        raise InvalidEvent("bad_query", f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InvalidEvent("empty_query")
    if len(query) > max_chars:
        raise InvalidEvent("query_too_long", f"{len(query)} > {max_chars} characters")
    return query


def _id(body: dict[str, Any], name: str, max_chars: int) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidEvent(f"missing_{name}")
    if not isinstance(value, str):
        raise InvalidEvent(f"bad_{name}", f"{name} must be a string, got {type(value).__name__}")
    if not value or len(value) > max_chars or _CONTROL.search(value):
        raise InvalidEvent(
            f"bad_{name}", f"{name} must be 1..{max_chars} characters, no control characters"
        )
    return value


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One refreshed top-K list for one user (contract ``recommendation`` v1, or v2).

    A list scored inside an experiment names it and its arm and is version 2; every other
    list is version 1, exactly as before experiments existed.
    """

    user_id: str
    items: list[tuple[str, float]]
    model_version: str
    trigger_event_id: str
    event_ts: int
    generated_ts: int
    experiment: str | None = None
    arm: str | None = None

    def to_json(self) -> bytes:
        """Serialise in the wire contract."""
        body: dict[str, Any] = {
            "v": RECOMMENDATION_VERSION,
            "user_id": self.user_id,
            "items": [{"item_id": i, "score": round(s, 6)} for i, s in self.items],
            "model_version": self.model_version,
            "trigger_event_id": self.trigger_event_id,
            "event_ts": self.event_ts,
            "generated_ts": self.generated_ts,
        }
        if self.experiment is not None:
            body["v"] = EXPERIMENT_RECOMMENDATION_VERSION
            body["experiment"] = self.experiment
            body["arm"] = self.arm
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, raw: bytes) -> Recommendation:
        """Parse a list read back from the output topic (either version)."""
        body = orjson.loads(raw)
        return cls(
            user_id=body["user_id"],
            items=[(x["item_id"], float(x["score"])) for x in body["items"]],
            model_version=body["model_version"],
            trigger_event_id=body["trigger_event_id"],
            event_ts=body["event_ts"],
            generated_ts=body["generated_ts"],
            experiment=body.get("experiment"),
            arm=body.get("arm"),
        )


def dead_letter(
    raw: bytes | None,
    *,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    ts: int,
) -> bytes:
    """Build a dead-letter record (contract ``dead_letter`` v1) for an offending message.

    The payload is kept as base64 of at most :data:`DEAD_LETTER_PAYLOAD_BYTES` bytes.
    """
    payload = raw or b""
    prefix = payload[:DEAD_LETTER_PAYLOAD_BYTES]
    return orjson.dumps(
        {
            "v": DEAD_LETTER_VERSION,
            "reason": reason,
            "detail": detail[:500],
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "payload_b64": base64.b64encode(prefix).decode("ascii"),
            "payload_bytes": len(payload),
            "truncated": len(prefix) < len(payload),
            "ts": ts,
        }
    )


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """``GET /search/?user_id=…&q=…&k=…``: a search ranked with the user's context.

    ``user_id`` follows the ids' rule, ``q`` the search event's query rule (not blank, at
    most ``max_query_chars``), ``k`` is 1..``max_k`` (the model's), ``default_k`` if absent.
    """

    user_id: str
    query: str
    k: int

    @classmethod
    def parse(
        cls, params: Mapping[str, str], limits: Limits, max_k: int, default_k: int
    ) -> SearchRequest:
        """Read the request's query parameters.

        Raises:
            InvalidRequest: naming the parameter at fault (answered 400).
        """
        try:
            user_id = _id(dict(params), "user_id", limits.max_id_chars)
            query = _query({"query": params.get("q")}, limits.max_query_chars)
        except InvalidEvent as exc:
            reason = exc.reason.replace("query", "q")
            raise InvalidRequest(reason, exc.detail.replace("query", "q")) from None
        raw_k = params.get("k")
        if raw_k is None:
            return cls(user_id, query, min(default_k, max_k))
        if not raw_k.isdigit() or not 1 <= int(raw_k) <= max_k:
            raise InvalidRequest("bad_k", f"k must be an integer from 1 to {max_k}, got {raw_k!r}")
        return cls(user_id, query, int(raw_k))


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What ``/search/`` answers (contract ``search_result`` v1).

    ``personalised`` says whether the user's context ranked the results (false: the user
    has none yet, the query's results alone). Inside an experiment ``experiment`` and
    ``arm`` name the user's arm, whose model answered; outside they are ``null``.
    """

    user_id: str
    query: str
    items: list[tuple[str, float]]
    model_version: str
    personalised: bool
    generated_ts: int
    experiment: str | None = None
    arm: str | None = None

    def to_json(self) -> bytes:
        """Serialise in the contract."""
        return orjson.dumps(
            {
                "v": SEARCH_RESULT_VERSION,
                "user_id": self.user_id,
                "query": self.query,
                "items": [{"item_id": i, "score": round(s, 6)} for i, s in self.items],
                "model_version": self.model_version,
                "personalised": self.personalised,
                "generated_ts": self.generated_ts,
                "experiment": self.experiment,
                "arm": self.arm,
            }
        )
