from stream.contracts.records import Event
from stream.state.context import ContextLimits, UserContext, apply_event, update_context
from tests.helpers import event


def fold(events, **bounds):
    context = None
    for e in events:
        context, _ = apply_event(context, e, **{"max_events": 50, "max_purchased": 500, **bounds})
    return context


def test_keeps_only_the_most_recent_n_events_in_order():
    context = fold([event(i, str(i), ts=1000 + i) for i in range(80)], max_events=50)
    assert len(context.events) == 50
    assert [e.event_id for e in context.events] == [f"e{i}" for i in range(30, 80)]


def test_purchases_are_remembered_beyond_the_event_window_and_bounded():
    events = [event(i, str(i), "purchase", ts=1000 + i) for i in range(10)] + [
        event(100 + i, str(100 + i), ts=1000 + 100 + i) for i in range(60)
    ]
    context = fold(events, max_events=50, max_purchased=8)
    assert context.purchased == tuple(str(i) for i in range(2, 10))
    assert all(e.type == "click" for e in context.events)


def test_repurchase_moves_item_to_the_end_without_duplicates():
    context = fold(
        [
            event(1, "a", "purchase", ts=1001),
            event(2, "b", "purchase", ts=1002),
            event(3, "a", "purchase", ts=1003),
        ]
    )
    assert context.purchased == ("b", "a")


def test_redelivered_event_is_not_applied_twice():
    context = fold([event(1, "1", ts=1001), event(2, "2", ts=1002)])
    again, changed = apply_event(context, event(2, "2", ts=1002), max_events=50, max_purchased=500)
    assert not changed and again is context


def test_exclusion_policies():
    context = fold(
        [
            event(1, "a", ts=1001),
            event(2, "b", "purchase", ts=1002),
            Event("s", "u", "search", 5, query="q"),
        ]
    )
    assert context.excluded_items("purchased") == ["b"]
    assert sorted(context.excluded_items("seen")) == ["a", "b"]


def test_bytes_round_trip_and_absent_user():
    context = fold(
        [
            event(1, "1", ts=1001),
            event(2, "2", "purchase", ts=1002),
            Event("s", "u", "search", 5, query="q"),
        ]
    )
    assert UserContext.from_bytes(context.to_bytes()) == context
    assert UserContext.from_bytes(None) is None


def test_seen_items_outlive_the_event_window_and_are_bounded():
    events = [event(i, f"old{i}", ts=1000 + i) for i in range(5)] + [
        event(100 + i, str(100 + i), ts=1000 + 100 + i) for i in range(60)
    ]
    context = fold(events, max_events=50, max_seen=63)
    assert "old2" not in {e.item_id for e in context.events}
    assert "old2" in context.excluded_items("seen") and "old0" not in context.seen
    assert len(context.seen) == 63
    assert fold(events, max_events=50).seen == ()  # not kept unless asked for


def test_version_1_contexts_read_with_seen_from_their_events():
    body = {"v": 1, "events": [["e1", "click", "a", None, 1]], "purchased": []}
    assert UserContext.from_dict(body).seen == ("a",)


def test_update_context_writes_back_only_changes():
    store = {}
    limits = ContextLimits(max_events=50, max_purchased=500, max_seen=10)
    context, changed = update_context(store, event(1, "1", ts=1001), limits)
    assert changed and UserContext.from_bytes(store["u"]) == context
    store_before = dict(store)
    assert update_context(store, event(1, "1", ts=1001), limits) == (context, False)
    assert store == store_before
