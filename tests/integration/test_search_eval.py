"""The search benchmark end to end on a real (tiny) model over the whole catalogue."""

from __future__ import annotations

from pathlib import Path

import orjson

from model_export.data.search_queries import TITLE_FAMILIES
from stream.contracts.manifest import load_manifest
from stream.tools.search_eval.cli import (
    evaluate,
    main,
    markdown,
    model_embed,
)


def test_every_family_is_measured_on_the_whole_catalogue(tiny_model_dir: Path) -> None:
    """All 1,682 MovieLens items: BM25 finds an exact title first almost always."""
    texts = list(load_manifest(tiny_model_dir, verify_hash=False).item_texts)
    report = evaluate(texts, {"model": model_embed(str(tiny_model_dir))})
    assert report["items"] == len(texts) == 1682
    assert tuple(report["families"]) == TITLE_FAMILIES
    exact = report["families"]["exact"]["methods"]
    assert exact["bm25"]["hr_at_1"]["mean"] > 0.95 and exact["bm25"]["hr_at_10"]["mean"] > 0.99
    assert 0 <= exact["model"]["mrr"]["mean"] <= 1
    assert report["descriptive"]["queries"] == 1680
    assert report["descriptive"]["methods"]["bm25"]["ndcg_at_10"]["mean"] > 0.5
    assert "| exact | `Toy Story (1995)` |" in markdown(report)


def test_the_list_path_searches_every_users_held_out_click(tiny_model_dir, tmp_path, capsys):
    """943 users, a search for their last click's item, then their list (no history-free
    MiniLM here, no temporal cut: those are the same code with another scorer)."""
    code = main(
        ["--model", str(tiny_model_dir), "--no-minilm", "--no-temporal", "--out", str(tmp_path)]
    )
    report = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report == orjson.loads((tmp_path / "search-eval.json").read_bytes())
    loo = report["lists"]["loo"]
    assert loo["cases"] == 943 and tuple(loo["families"]) == TITLE_FAMILIES
    exact = loo["families"]["exact"]["methods"]
    assert set(exact) == {"model", "model_no_search", "bm25"}
    # the search term is what puts the searched item first
    assert exact["model"]["hr_at_1"]["mean"] > 0.9
    assert exact["model_no_search"]["hr_at_1"]["mean"] < 0.3
    assert loo["descriptive"]["methods"]["model"]["ndcg_at_10"]["mean"] > 0.5
    assert report["held_out_items"] > 100  # reported apart in the first stage
    assert "held_out_hr_at_10" in report["families"]["typo"]["methods"]["model"]
    written = (tmp_path / "search-eval.md").read_text()
    assert "## The list after a search: loo (943 users)" in written
