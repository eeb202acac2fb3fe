from collections import Counter

import pytest

from model_export.data.sources import movielens_items, read_table
from stream.errors import DataError


def test_every_rating_is_a_click_and_high_ratings_also_a_purchase(movielens, datasets_dir):
    ratings = read_table("MovieLens100k_data", datasets_dir).column("rating").to_pylist()
    kinds = Counter(e.type for e in movielens)
    assert kinds["click"] == 100_000
    assert kinds["purchase"] == sum(r >= 4 for r in ratings)
    assert len({e.user_id for e in movielens}) == 943
    assert len({e.event_id for e in movielens}) == len(movielens)


def test_time_order_with_stable_ties_and_decimal_ids(movielens):
    stamps = [e.ts for e in movielens]
    assert stamps == sorted(stamps)
    rows = [int(e.event_id.split("-")[1]) for e in movielens if e.type == "click"]
    clicks = [e for e in movielens if e.type == "click"]
    for a, b, ra, rb in zip(clicks, clicks[1:], rows, rows[1:], strict=False):
        if a.ts == b.ts:
            assert ra < rb  # ties keep the file's row order
    first = next(e for e in movielens if e.event_id == "ml-0-click")
    assert (first.user_id, first.item_id, first.ts) == ("196", "242", 881250949000)
    purchase_follows_click = [
        (a.event_id, b.event_id)
        for a, b in zip(movielens, movielens[1:], strict=False)
        if b.type == "purchase"
    ]
    assert all(a.replace("click", "purchase") == b for a, b in purchase_follows_click)


def test_items_have_titles_and_genres(datasets_dir):
    items = movielens_items(datasets_dir)
    assert len(items) == 1682
    assert items[0].item_id == "1"
    assert items[0].text == "Toy Story (1995) | Animation, Children's, Comedy"


def test_missing_wheel_says_how_to_fetch_it(tmp_path):
    with pytest.raises(DataError, match="fetch-data"):
        read_table("MovieLens100k_data", tmp_path)


def test_own_logs_read_from_jsonl_and_parquet_with_bad_rows_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from model_export.data.sources import read_catalogue, read_events

    good = b'{"event_id":"1","user_id":"u","type":"click","ts":5,"item_id":"a"}'
    (tmp_path / "ev.jsonl").write_bytes(good + b"\nnot json\n\n" + good.replace(b'"1"', b'"2"'))
    log = read_events(tmp_path / "ev.jsonl")
    assert [e.event_id for e in log.events] == ["1", "2"] and log.rejected == {"not_json": 1}
    rows = [{"event_id": "3", "user_id": "u", "type": "search", "ts": 6, "query": "red"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ev.parquet")
    assert read_events(tmp_path / "ev.parquet").events[0].query == "red"
    pq.write_table(
        pa.Table.from_pylist([{"item_id": "a", "text": "A shoe"}]), tmp_path / "c.parquet"
    )
    assert read_catalogue(tmp_path / "c.parquet")[0].text == "A shoe"


def test_catalogue_without_text_is_refused(tmp_path):
    from model_export.data.sources import read_catalogue
    from stream.errors import DataError

    (tmp_path / "c.jsonl").write_text('{"item_id": "a"}\n')
    with pytest.raises(DataError, match="item_id and text"):
        read_catalogue(tmp_path / "c.jsonl")


def test_the_catalogue_command_writes_records_of_the_contract_training_reads_back(
    datasets_dir, tmp_path
):
    from model_export.cli import main
    from model_export.data.sources import movielens_catalogue, read_catalogue
    from stream.contracts.records import parse_catalogue

    out = tmp_path / "items.jsonl"
    assert main(["--datasets-dir", str(datasets_dir), "catalogue", "--out", str(out)]) == 0
    lines = out.read_bytes().splitlines()
    records = [parse_catalogue(line, None) for line in lines]
    assert len(records) == 1682 and all(r.available for r in records)
    assert read_catalogue(out) == movielens_catalogue(datasets_dir)
