import base64
import json
import re
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.contracts.records import (
    DEAD_LETTER_PAYLOAD_BYTES,
    ID_PATTERN,
    SCHEMAS_DIR,
    CatalogueRecord,
    Limits,
    Recommendation,
    SearchRequest,
    SearchResult,
    dead_letter,
    parse_catalogue,
    parse_event,
)
from stream.errors import InvalidEvent, InvalidRequest

SCHEMAS = SCHEMAS_DIR
EVENT_SCHEMA = json.loads((SCHEMAS / "event.v1.json").read_text())

GOOD = {"event_id": "e1", "user_id": "196", "type": "click", "item_id": "242", "ts": 881250949000}


def body(**changes):
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


VALID = [
    body(),
    body(type="purchase"),
    body(type="search", item_id=..., query="star wars"),
    body(type="search", query="toy story"),  # optional item on a search
    body(query="from a search page"),  # optional query on a click
    body(v=1),
    body(user_id="ü𝔘ser 名前", ts=0),
]

INVALID = [
    (body(user_id=...), "missing_user_id"),
    (body(event_id=...), "missing_event_id"),
    (body(user_id=5), "bad_user_id"),
    (body(user_id=""), "bad_user_id"),
    (body(user_id="a\nb"), "bad_user_id"),
    (body(user_id="x" * 10_000), "bad_user_id"),
    (body(type="view"), "bad_type"),
    (body(type=None), "bad_type"),
    (body(item_id=...), "missing_item_id"),
    (body(item_id=242), "bad_item_id"),
    (body(type="search", item_id=...), "missing_query"),
    (body(type="search", query="   "), "empty_query"),
    (body(type="search", query="q" * 2000), "query_too_long"),
    (body(type="search", query=["a"]), "bad_query"),
    (body(ts="881250949"), "bad_ts"),
    (body(ts=1.5), "bad_ts"),
    (body(ts=True), "bad_ts"),
    (body(ts=-1), "bad_ts"),
    (body(ts=10**16), "bad_ts"),
    (body(extra=1), "unknown_field"),
    (body(v=2), "unsupported_version"),
]


@pytest.mark.parametrize("payload", VALID)
def test_valid_events_parse_and_match_the_schema(payload):
    event = parse_event(orjson.dumps(payload), key=payload["user_id"].encode())
    assert event.user_id == payload["user_id"] and event.type == payload["type"]
    jsonschema.validate(payload, EVENT_SCHEMA)
    assert parse_event(event.to_json()) == event  # round trip


@pytest.mark.parametrize(("payload", "reason"), INVALID)
def test_each_invalid_shape_is_named_and_rejected_by_the_schema(payload, reason):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(orjson.dumps(payload))
    assert caught.value.reason == reason
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, EVENT_SCHEMA)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty_message"),
        (b"", "empty_message"),
        (b"{", "not_json"),
        (b"[]", "not_an_object"),
        (b"\xff\xfe", "not_json"),
        (b'"text"', "not_an_object"),
    ],
)
def test_unparseable_messages(raw, reason):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert caught.value.reason == reason


def test_size_limit_and_key_mismatch():
    with pytest.raises(InvalidEvent, match="too_large"):
        parse_event(orjson.dumps(body(item_id="i" * 100)), limits=Limits(max_event_bytes=64))
    with pytest.raises(InvalidEvent, match="key_mismatch"):
        parse_event(orjson.dumps(body()), key=b"someone-else")


def test_recommendation_round_trip():
    rec = Recommendation("u", [("1", 0.5), ("2", 0.25)], "m1", "e9", 5, 6)
    assert Recommendation.from_json(rec.to_json()) == rec


def test_dead_letter_keeps_a_safe_prefix():
    raw = b"x" * 20_000
    letter = orjson.loads(
        dead_letter(
            raw, reason="too_large", detail="d", topic="events", partition=1, offset=7, ts=3
        )
    )
    assert letter["truncated"] and letter["payload_bytes"] == 20_000
    assert len(letter["payload_b64"]) < 25_000
    jsonschema.validate(letter, json.loads((SCHEMAS / "dead_letter.v1.json").read_text()))
    assert base64.b64decode(letter["payload_b64"]) == raw[:DEAD_LETTER_PAYLOAD_BYTES]


def _json(value):
    return json.dumps(value).encode()  # stdlib: big ints and non-finite floats too


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, "1", None]),
        "event_id": st.text(max_size=300) | st.integers(),
        "user_id": st.just("u") | st.text(max_size=300),
        "type": st.sampled_from(["click", "search", "purchase", "view", "", None]),
        "item_id": st.text(max_size=300) | st.integers() | st.none(),
        "query": st.text(max_size=1100) | st.none(),
        "ts": st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(),
        "extra": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=300) | json_values.map(_json) | event_like.map(_json))
def test_any_input_is_an_event_or_a_named_rejection(raw):
    """Fuzz: whatever arrives, the parser returns a valid event or raises InvalidEvent."""
    try:
        ev = parse_event(raw, b"u")
    except InvalidEvent as exc:
        assert exc.reason and " " not in exc.reason
        return
    assert ev.user_id == "u" and ev.type in ("click", "search", "purchase")
    assert 0 <= ev.ts and len(ev.event_id) <= Limits().max_id_chars


CATALOGUE_SCHEMA = json.loads((SCHEMAS / "catalogue.v1.json").read_text())
ITEM = {
    "v": 1,
    "item_id": "1683",
    "text": "Galactic Harvest (1998) | Sci-Fi",
    "available": True,
    "ts": 5,
}


def item(**changes):
    out = {**ITEM, **changes}
    return {k: v for k, v in out.items() if v is not ...}


@pytest.mark.parametrize(
    "payload", [item(), item(v=...), item(available=...), item(available=False)]
)
def test_valid_catalogue_records_parse_and_match_the_schema(payload):
    jsonschema.validate(payload, CATALOGUE_SCHEMA)
    record = parse_catalogue(orjson.dumps(payload), b"1683")
    assert isinstance(record, CatalogueRecord) and record.item_id == "1683"
    assert record.available is payload.get("available", True)
    assert parse_catalogue(record.to_json(), b"1683") == record


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (item(text=...), "bad_text"),
        (item(text="  "), "bad_text"),
        (item(text="t" * 5000), "bad_text"),
        (item(item_id=...), "missing_item_id"),
        (item(available="yes"), "bad_available"),
        (item(ts=...), "bad_ts"),
        (item(v=2), "unsupported_version"),
        (item(price=3), "unknown_field"),
    ],
)
def test_invalid_catalogue_records_are_named_and_rejected_by_the_schema(payload, reason):
    with pytest.raises(InvalidEvent) as caught:
        parse_catalogue(orjson.dumps(payload), b"1683")
    assert caught.value.reason == reason
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, CATALOGUE_SCHEMA)


def test_a_null_value_removes_the_item_its_key_names():
    assert parse_catalogue(None, b"1683") == "1683"
    with pytest.raises(InvalidEvent, match="missing_key"):
        parse_catalogue(None, None)
    with pytest.raises(InvalidEvent, match="key_mismatch"):
        parse_catalogue(orjson.dumps(ITEM), b"other")


# --- the parser and the schema accept exactly the same events -------------------------------

UNUSUAL_IDS = [
    "a\u00a0b",  # non-breaking space
    "👩\u200d👩\u200d👧",  # emoji joined by zero-width joiners
    "שלום עולם",  # right-to-left text
    "\u200fמשתמש-7",  # a right-to-left mark
    "名前 ü𝔘ser",
]


@pytest.mark.parametrize("unusual", UNUSUAL_IDS)
def test_unusual_but_valid_ids_pass_the_parser_and_the_schema(unusual):
    payload = body(user_id=unusual, event_id=unusual, item_id=unusual)
    jsonschema.validate(payload, EVENT_SCHEMA)
    event = parse_event(orjson.dumps(payload), key=unusual.encode())
    assert (event.user_id, event.event_id, event.item_id) == (unusual, unusual, unusual)


@pytest.mark.parametrize("control", ["\x00", "\n", "\x1f", "\x7f", "\x85", "\x9f"])
def test_a_control_character_anywhere_in_an_id_is_refused_by_both(control):
    for where in (f"{control}ab", f"a{control}b", f"ab{control}"):  # "ab\n": Python's $ trap
        payload = body(user_id=where)
        assert not schema_accepts(payload) and not parser_accepts(payload)


def test_every_id_in_the_schemas_follows_the_one_rule():
    for name in ("event.v1.json", "catalogue.v1.json", "search_result.v1.json"):
        schema = json.loads((SCHEMAS / name).read_text())
        ids = [k for k in schema["properties"] if k.endswith("_id")]
        assert ids and all(schema["properties"][k]["pattern"] == ID_PATTERN for k in ids)


def schema_accepts(payload: Any) -> bool:
    return jsonschema.Draft202012Validator(EVENT_SCHEMA).is_valid(payload)


def parser_accepts(payload: Any) -> bool:
    try:
        parse_event(_json(payload))
    except InvalidEvent:
        return False
    return True


def _field(spec: dict) -> st.SearchStrategy[Any]:
    """A value for one property, from its constraints in the schema."""
    if "const" in spec:
        return st.just(spec["const"])
    if "enum" in spec:
        return st.sampled_from(spec["enum"])
    if spec["type"] == "integer":
        return st.integers(spec["minimum"], spec["maximum"])
    pattern = re.compile(spec["pattern"])
    size = st.text(min_size=spec["minLength"], max_size=min(spec["maxLength"], 40))
    return size.filter(lambda text: pattern.search(text) is not None)


@st.composite
def events_from_schema(draw: st.DrawFn, schema: dict = EVENT_SCHEMA) -> dict:
    """An event as the schema describes it: required fields, the if/then/else on type, and
    each optional property present or not."""
    properties = schema["properties"]
    event = {name: draw(_field(properties[name])) for name in schema["required"]}
    condition = schema["if"]["properties"]["type"]["const"]
    needed = schema["then" if event["type"] == condition else "else"]["required"]
    for name in sorted(properties.keys() - event.keys()):
        if name in needed or draw(st.booleans()):
            event[name] = draw(_field(properties[name]))
    return event


@st.composite
def mutated(draw: st.DrawFn, event: dict) -> dict:
    """``event`` with one field removed, replaced by anything, poisoned, or one added."""
    changed = dict(event)
    name = draw(st.sampled_from([*sorted(EVENT_SCHEMA["properties"]), "extra"]))
    how = draw(st.sampled_from(["remove", "replace", "poison", "blank", "float"]))
    if how == "remove":
        changed.pop(name, None)
    elif how == "replace":
        changed[name] = draw(json_values)
    elif how == "poison":  # a character of any category, control characters included
        text = str(changed.get(name, "x"))
        at = draw(st.integers(0, len(text)))
        changed[name] = text[:at] + draw(st.characters(codec="utf-8")) + text[at:]
    elif how == "blank":
        changed[name] = draw(st.sampled_from(["", " ", "\u00a0", "\t", "\u2003"]))
    else:  # JSON numbers: 5.0 is an integer to JSON Schema
        changed[name] = float(draw(st.integers(-5, 10**13)))
    return changed


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_parser_and_schema_accept_the_same_events(data):
    """Events generated from the schema are accepted by both; every mutation of one is
    accepted by both or refused by both."""
    event = data.draw(events_from_schema())
    assert schema_accepts(event) and parser_accepts(event), event
    changed = data.draw(mutated(event))
    assert parser_accepts(changed) == schema_accepts(changed), changed


# --- the search endpoint's request and result ---------------------------------------------


def test_a_search_request_reads_its_parameters_and_defaults_k():
    request = SearchRequest.parse({"user_id": "196", "q": "fargo"}, Limits(), 100, 20)
    assert request == SearchRequest("196", "fargo", 20)
    params = {"user_id": "196", "q": "fargo", "k": "100"}
    assert SearchRequest.parse(params, Limits(), 100, 20).k == 100


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"q": "fargo"}, "missing_user_id"),
        ({"user_id": "", "q": "fargo"}, "bad_user_id"),
        ({"user_id": "a\nb", "q": "fargo"}, "bad_user_id"),
        ({"user_id": "196"}, "missing_q"),
        ({"user_id": "196", "q": "   "}, "empty_q"),
        ({"user_id": "196", "q": "x" * 1025}, "q_too_long"),
        ({"user_id": "196", "q": "fargo", "k": "0"}, "bad_k"),
        ({"user_id": "196", "q": "fargo", "k": "101"}, "bad_k"),
        ({"user_id": "196", "q": "fargo", "k": "ten"}, "bad_k"),
        ({"user_id": "196", "q": "fargo", "k": "-3"}, "bad_k"),
    ],
)
def test_a_bad_search_request_is_refused_naming_the_parameter(params, reason):
    with pytest.raises(InvalidRequest) as refused:
        SearchRequest.parse(params, Limits(), 100, 20)
    assert refused.value.reason == reason


def test_a_search_result_matches_its_schema():
    schema = json.loads((SCHEMAS / "search_result.v1.json").read_text())
    result = SearchResult("196", "fargo", [("275", 12.5), ("50", 3.25)], "seqrec-x", True, 1)
    jsonschema.validate(orjson.loads(result.to_json()), schema)
    in_arm = SearchResult("196", "fargo", [], "seqrec-x", False, 1, experiment="e", arm="b")
    body = orjson.loads(in_arm.to_json())
    jsonschema.validate(body, schema)
    assert (body["experiment"], body["arm"], body["personalised"]) == ("e", "b", False)
