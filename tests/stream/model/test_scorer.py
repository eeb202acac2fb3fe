import shutil

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from model_export.ranking import topk_overlap
from stream.catalogue.items import Catalogue
from stream.contracts.manifest import MANIFEST_FILE, QUERY_ENCODER, QUERY_ENCODER_INT8, sha256_file
from stream.contracts.records import CatalogueRecord, Event
from stream.errors import ModelLoadError
from stream.model.diversity import unit_rows
from stream.model.scorer import CPU, CUDA, Scorer, choose_providers, cuda_driver_present
from tests.helpers import context_of, event


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return Scorer(tiny_model_dir, provider="cpu", top_k=20)


def test_lists_have_k_distinct_known_items(scorer):
    lists = scorer.score([context_of(event(1, "50"), event(2, "172")), context_of(event(3, "1"))])
    assert len(lists) == 2
    for ranked in lists:
        ids = [i for i, _ in ranked]
        assert len(ids) == 20 == len(set(ids))
        assert set(ids) <= set(scorer.manifest.items)


def test_purchased_items_are_never_recommended(scorer):
    plain = context_of(event(1, "50"))
    top = [i for i, _ in scorer.score([plain])[0]]
    bought = context_of(
        event(1, "50"), *[event(10 + n, item, "purchase") for n, item in enumerate(top[:5])]
    )
    after = [i for i, _ in scorer.score([bought])[0]]
    assert not set(top[:5]) & set(after)
    assert len(after) == 20


def test_seen_policy_excludes_clicked_items(tiny_model_dir):
    seen = Scorer(tiny_model_dir, provider="cpu", exclude="seen")
    top = [i for i, _ in seen.score([context_of(event(1, "50"))])[0]]
    again = context_of(event(1, "50"), event(2, top[0]))
    assert top[0] not in [i for i, _ in seen.score([again])[0]]


def test_unknown_items_and_search_only_users_still_get_lists(scorer):
    context = context_of(event(1, "no-such-item"), Event("s", "u", "search", 2, query="noir"))
    assert len(scorer.score([context])[0]) == 20
    assert scorer.score([]) == []


def test_history_longer_than_the_model_window(scorer):
    long = context_of(*[event(i, str(1 + i % 1000)) for i in range(200)])
    assert len(scorer.score([long])[0]) == 20


def test_top_k_above_the_models_max_k_is_refused(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="max_k"):
        Scorer(tiny_model_dir, top_k=10_000)


def test_provider_choice_on_a_machine_without_cuda(monkeypatch):
    assert choose_providers("cpu") == [CPU]
    monkeypatch.setattr("stream.model.scorer.cuda_driver_present", lambda: False)
    assert choose_providers("auto") == [CPU]
    assert choose_providers("cuda")[-1] == CPU  # asked, with CPU as the fallback


def test_cuda_requested_without_a_gpu_falls_back_to_cpu(tiny_model_dir, caplog):
    scorer = Scorer(tiny_model_dir, provider="cuda")
    if "CUDAExecutionProvider" in scorer.providers:
        pytest.skip("a GPU is present")
    assert scorer.providers == [CPU]
    assert "falling back" in caplog.text or "scoring on CPU" in caplog.text


def search(i, query):
    return Event(f"s{i}", "u", "search", i, query=query)


def test_search_events_change_the_list_and_repeated_queries_hit_the_cache(scorer):
    base = context_of(event(1, "50"))
    searched = context_of(event(1, "50"), search(2, "Star Wars"))
    other = context_of(event(1, "50"), search(2, "Toy Story children's animation"))
    lists = scorer.score([base, searched, other])
    assert scorer.queries is not None
    scores = [[s for _, s in ranked] for ranked in lists]
    assert scores[0] != scores[1] and scores[1] != scores[2]  # the query reaches the ranker
    hits = scorer.queries.hits
    scorer.score([searched])
    assert scorer.queries.hits == hits + 1
    inputs = scorer.encode([searched])
    assert inputs["query_ids"][0, -1] == 1 and not inputs["query_ids"][0, :-1].any()
    assert inputs["query_table"].shape == (2, scorer.manifest.query_dim)
    assert inputs["query_table"][1].any() and not inputs["query_table"][0].any()


def test_diversity_reorders_the_same_candidates_into_a_more_varied_list(tiny_model_dir, scorer):
    from model_export.ranking import intra_list_diversity

    diverse = Scorer(tiny_model_dir, provider="cpu", top_k=20, diversity=0.7)
    assert diverse.item_vectors is not None
    contexts = [context_of(event(1, "50"), event(2, "172")), context_of(event(3, "1"))]
    plain, varied = scorer.score(contexts), diverse.score(contexts)
    index = {item: i + 1 for i, item in enumerate(scorer.manifest.items)}
    for before, after in zip(plain, varied, strict=True):
        assert len(after) == 20 and after[0] == before[0]  # the best item still leads
        assert {i for i, _ in after} != {i for i, _ in before}
        rows = [np.array([[index[i] for i, _ in ranked]]) for ranked in (before, after)]
        assert intra_list_diversity(rows[1], diverse.item_vectors) > intra_list_diversity(
            rows[0], diverse.item_vectors
        )
    bought = context_of(event(1, "50"), event(2, varied[0][1][0], "purchase"))
    assert varied[0][1][0] not in [i for i, _ in diverse.score([bought])[0]]


def model_without(tiny_model_dir, tmp_path, role):
    """A copy of the tiny model whose manifest no longer names the file of ``role``."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    body = orjson.loads((model / MANIFEST_FILE).read_bytes())
    body["files"].pop(role, None)  # (a model may not ship it at all)
    (model / MANIFEST_FILE).write_bytes(orjson.dumps(body))
    return model


def test_diversity_without_item_vectors_says_what_to_do(tiny_model_dir, tmp_path):
    model = model_without(tiny_model_dir, tmp_path, "item_vectors")
    assert Scorer(model, provider="cpu").item_vectors is None  # off: not needed
    with pytest.raises(ModelLoadError, match="STREAMREC_DIVERSITY=0"):
        Scorer(model, provider="cpu", diversity=0.3)


def model_with_int8(tiny_model_dir, tmp_path):
    """A copy of the tiny model that ships an int8 query encoder (quantised here)."""
    from model_export.export.onnx import FILES, export_query_encoder_int8

    model = tmp_path / "model-int8"
    shutil.copytree(tiny_model_dir, model)
    path = model / FILES[QUERY_ENCODER_INT8]
    export_query_encoder_int8(model / FILES[QUERY_ENCODER], path)
    body = orjson.loads((model / MANIFEST_FILE).read_bytes())
    body["files"][QUERY_ENCODER_INT8] = {"file": path.name, "sha256": sha256_file(path)}
    (model / MANIFEST_FILE).write_bytes(orjson.dumps(body))
    return model


def test_cpu_hosts_encode_queries_with_the_int8_encoder_where_the_model_ships_one(
    tiny_model_dir, tmp_path
):
    model = model_with_int8(tiny_model_dir, tmp_path)
    int8 = Scorer(model, provider="cpu")
    assert int8.query_role == QUERY_ENCODER_INT8  # auto, on CPU, and the model has one
    fp32 = Scorer(model, provider="cpu", query_precision="fp32")
    assert fp32.query_role == QUERY_ENCODER
    queries = ["star wars", "toy story", "a comedy from 1995"]
    a = fp32.queries.encode_uncached(queries)
    b = int8.queries.encode_uncached(queries)
    cosine = (unit_rows(a) * unit_rows(b)).sum(axis=1)
    assert a.shape == b.shape and cosine.min() > 0.95


def test_asking_for_int8_queries_from_a_model_without_them_says_what_to_do(
    tiny_model_dir, tmp_path
):
    model = model_without(tiny_model_dir, tmp_path, QUERY_ENCODER_INT8)
    assert Scorer(model, provider="cpu").query_role == QUERY_ENCODER  # auto: fp32
    with pytest.raises(ModelLoadError, match="make model"):
        Scorer(model, provider="cpu", query_precision="int8")


def test_the_fp32_ranker_serves_on_cpu(scorer):
    assert scorer.ranker_role == "ranker" and scorer.providers == [CPU]


def test_io_binding_gives_the_plain_runs_results(tiny_model_dir, scorer):
    """The CUDA path binds inputs and outputs; on CPU the same code must give the same lists."""
    bound = Scorer(tiny_model_dir, provider="cpu", top_k=20, io_binding=True)
    assert not scorer.io_binding and bound.io_binding
    contexts = [
        context_of(event(1, "50"), event(2, "172"), search(3, "star wars")),
        context_of(event(4, "1", "purchase")),
    ]
    plain = scorer.run(scorer.encode(contexts))
    via_binding = bound.run(bound.encode(contexts))
    for a, b in zip(plain, via_binding, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(
    not (cuda_driver_present() and CUDA in ort.get_available_providers()),
    reason="needs a CUDA device and onnxruntime-gpu's CUDA provider",
)
def test_the_fp16_ranker_on_cuda_agrees_with_cpu(shipped_model_dir):
    """Run on a GPU host: fp16 + IO binding on CUDA gives nearly the CPU's top-10s."""
    cpu = Scorer(shipped_model_dir, provider="cpu", top_k=20)
    gpu = Scorer(shipped_model_dir, provider="cuda", top_k=20)
    assert gpu.providers[0] == CUDA and gpu.ranker_role == "ranker_fp16" and gpu.io_binding
    contexts = [
        context_of(event(i, str(1 + i % 50)), event(i + 1, str(100 + i))) for i in range(64)
    ]
    _, cpu_top, _ = cpu.run(cpu.encode(contexts))
    _, gpu_top, _ = gpu.run(gpu.encode(contexts))
    overlap = topk_overlap(cpu_top[:, :10], gpu_top[:, :10])
    assert overlap >= 0.95, overlap


def test_new_items_reach_diversity_re_ranking_and_io_binding(tiny_model_dir):
    catalogue = Catalogue()
    catalogue.apply(
        [
            CatalogueRecord(f"new-{n}", f"Galactic Harvest {n} (1998) | Sci-Fi", ts=1)
            for n in range(3)
        ]
        + [CatalogueRecord(i, "gone", ts=1, available=False) for i in map(str, range(4, 1683))]
    )
    contexts = [context_of(event(1, "1"), search(2, "Galactic Harvest"))]
    for scorer in (
        Scorer(tiny_model_dir, provider="cpu", top_k=5, diversity=0.5),
        Scorer(tiny_model_dir, provider="cpu", top_k=5, io_binding=True),
    ):
        items = scorer.follow(catalogue)
        assert items.num_extra == 3 and len(items.blocked) == 1 + 1679
        (ranked,) = scorer.score(contexts)
        # items 1-3 and the three new ones are all that may be listed (purchases excluded)
        assert {item for item, _ in ranked} <= {"1", "2", "3", "new-0", "new-1", "new-2"}
        assert len(ranked) == 5
