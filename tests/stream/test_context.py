from stream.context import ContextLimits, UserContext, apply_event, update_context
from stream.records import Event


def ev(i, kind="click", item=None, user="u"):
    return Event(f"e{i}", user, kind, 1000 + i, item_id=item or str(i))


def fold(events, **bounds):
    context = None
    for e in events:
        context, _ = apply_event(context, e, **{"max_events": 50, "max_purchased": 500, **bounds})
    return context


def test_keeps_only_the_most_recent_n_events_in_order():
    context = fold([ev(i) for i in range(80)], max_events=50)
    assert len(context.events) == 50
    assert [e.event_id for e in context.events] == [f"e{i}" for i in range(30, 80)]


def test_purchases_are_remembered_beyond_the_event_window_and_bounded():
    events = [ev(i, "purchase") for i in range(10)] + [ev(100 + i) for i in range(60)]
    context = fold(events, max_events=50, max_purchased=8)
    assert context.purchased == tuple(str(i) for i in range(2, 10))
    assert all(e.type == "click" for e in context.events)


def test_repurchase_moves_item_to_the_end_without_duplicates():
    context = fold([ev(1, "purchase", "a"), ev(2, "purchase", "b"), ev(3, "purchase", "a")])
    assert context.purchased == ("b", "a")


def test_redelivered_event_is_not_applied_twice():
    context = fold([ev(1), ev(2)])
    again, changed = apply_event(context, ev(2), max_events=50, max_purchased=500)
    assert not changed and again is context


def test_exclusion_policies():
    context = fold(
        [ev(1, item="a"), ev(2, "purchase", "b"), Event("s", "u", "search", 5, query="q")]
    )
    assert context.excluded_items("purchased") == ["b"]
    assert sorted(context.excluded_items("seen")) == ["a", "b"]


def test_bytes_round_trip_and_absent_user():
    context = fold([ev(1), ev(2, "purchase"), Event("s", "u", "search", 5, query="q")])
    assert UserContext.from_bytes(context.to_bytes()) == context
    assert UserContext.from_bytes(None) is None


def test_seen_items_outlive_the_event_window_and_are_bounded():
    events = [ev(i, item=f"old{i}") for i in range(5)] + [ev(100 + i) for i in range(60)]
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
    context, changed = update_context(store, ev(1), limits)
    assert changed and UserContext.from_bytes(store["u"]) == context
    store_before = dict(store)
    assert update_context(store, ev(1), limits) == (context, False)
    assert store == store_before
