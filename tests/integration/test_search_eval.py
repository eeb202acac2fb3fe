"""The search benchmark end to end on a real (tiny) model over the whole catalogue."""

from __future__ import annotations

import orjson

from model_export.data.search_queries import TITLE_FAMILIES
from stream.tools.search_eval.cli import main


def test_both_stages_measure_every_family_on_the_whole_catalogue(tiny_model_dir, tmp_path, capsys):
    """All 1,682 MovieLens items through the encoders (BM25 finds an exact title first almost
    always); then 943 users, a search for their last click's item, then their list (no
    history-free MiniLM here, no temporal cut: those are the same code with another scorer)."""
    code = main(
        ["--model", str(tiny_model_dir), "--no-minilm", "--no-temporal", "--out", str(tmp_path)]
    )
    report = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report == orjson.loads((tmp_path / "search-eval.json").read_bytes())
    # the first stage: the query encoder against every item's text
    assert report["items"] == 1682 and tuple(report["families"]) == TITLE_FAMILIES
    exact = report["families"]["exact"]["methods"]
    assert exact["bm25"]["hr_at_1"]["mean"] > 0.95 and exact["bm25"]["hr_at_10"]["mean"] > 0.99
    assert 0 <= exact["model"]["mrr"]["mean"] <= 1
    assert report["descriptive"]["queries"] == 1680
    assert report["descriptive"]["methods"]["bm25"]["ndcg_at_10"]["mean"] > 0.5
    assert report["held_out_items"] > 100  # reported apart in the first stage
    assert "held_out_hr_at_10" in report["families"]["typo"]["methods"]["model"]
    # the second: the list after a search, through the ranker
    loo = report["lists"]["loo"]
    assert loo["cases"] == 943 and tuple(loo["families"]) == TITLE_FAMILIES
    exact = loo["families"]["exact"]["methods"]
    assert set(exact) == {"model", "model_no_search", "bm25"}
    # the search term is what puts the searched item first
    assert exact["model"]["hr_at_1"]["mean"] > 0.9
    assert exact["model_no_search"]["hr_at_1"]["mean"] < 0.3
    assert loo["descriptive"]["methods"]["model"]["ndcg_at_10"]["mean"] > 0.5
    written = (tmp_path / "search-eval.md").read_text()
    assert "| exact | `Toy Story (1995)` |" in written
    assert "## The list after a search: loo (943 users)" in written
