import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model_export.export.onnx import OPSET, dynamic_axes, export_fp16, export_ranker
from model_export.export.parity import check_ranker, ranker_inputs
from stream.contracts.manifest import RANKER_INPUTS, load_manifest
from stream.errors import ModelExportError
from tests.helpers import searching_ranker, small_ranker


def test_exported_graphs_follow_the_contract(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    ranker = onnx.load(str(manifest.path(tiny_model_dir, "ranker"))).graph
    assert [i.name for i in ranker.input] == [s.name for s in RANKER_INPUTS]
    assert [o.name for o in ranker.output] == ["scores", "indices", "extra_mass"]
    assert ranker.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    encoder = onnx.load(str(manifest.path(tiny_model_dir, "query_encoder"))).graph
    dims = [d.dim_param for d in encoder.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "tokens"]  # dynamic batch and length
    assert manifest.opset == OPSET and "exclude_ids" in dynamic_axes(*RANKER_INPUTS)
    parity = manifest.training["parity"]
    assert parity["ranker"]["max_abs_score_diff"] <= 1e-4
    assert parity["ranker"]["max_extra_mass_error"] <= 1e-5
    assert parity["ranker"]["top10_identical"] >= 0.999
    assert parity["ranker"]["fp16_top10_overlap"] >= 0.99
    assert parity["query_encoder"]["max_abs_vector_diff"] <= 1e-4  # checked on the fused graph
    fused = parity["query_encoder"]["fused_operators"]  # one Attention per MiniLM layer
    assert fused["Attention"] == 6 and fused["EmbedLayerNormalization"] == 1
    assert sum(n.op_type == "Attention" for n in encoder.node) == 6
    tower = parity["item_tower"]  # trained items rebuilt from their text by the ONNX tower
    assert tower["items"] == 1682 and tower["max_abs_trained_vector_diff"] <= 1e-3
    assert tower["top10_overlap"] >= 0.99
    int8 = parity["query_encoder_int8"]  # judged by the ranker's top-10s; shipped if it passes
    assert int8["passed"] == (int8["top10_overlap"] >= 0.99) and int8["mean_cosine"] > 0.95
    assert ("query_encoder_int8" in manifest.files) == int8["passed"]


@pytest.mark.parametrize("search", [False, True], ids=["no-text", "search-term"])
def test_parity_passes_on_a_faithful_export_with_fp16(tmp_path, search):
    ranker = searching_ranker() if search else small_ranker()
    path = export_ranker(ranker, tmp_path / "r.onnx")
    half = export_fp16(ranker, tmp_path / "r16.onnx")
    report = check_ranker(ranker, path, half)  # batch 1 and 512, no extra items and 1,000
    assert report["cases"] == [[1, 0], [1, 1000], [64, 3], [512, 0], [512, 1000]]
    assert report["max_abs_score_diff"] <= 1e-4 and report["top10_identical"] == 1.0
    assert report["fp16_top10_overlap"] >= 0.99


def test_parity_check_collects_every_mismatch(tmp_path):
    ranker = small_ranker()
    path = export_ranker(ranker, tmp_path / "r.onnx")
    with torch.no_grad():
        ranker.item_emb.weight.add_(torch.randn_like(ranker.item_emb.weight))  # now differs
    with pytest.raises(ModelExportError) as caught:
        check_ranker(ranker, path, cases=((1, 0), (64, 5)))
    assert str(caught.value).count("batch") >= 2  # both batches reported, not just the first


def test_parity_inputs_cover_short_empty_and_search_histories():
    inputs = ranker_inputs(small_ranker(), 64)
    lengths = (inputs["event_types"] > 0).sum(axis=1)
    assert lengths[0] == 1 and lengths[1] == 0 and len(np.unique(lengths)) > 3
    searches = inputs["event_types"] == 2
    assert searches.any() and (inputs["item_ids"][searches] == 0).all()
    assert (inputs["query_ids"][~searches] == 0).all() and (inputs["query_ids"][searches] > 0).all()
    assert not inputs["query_table"][0].any() and len(inputs["query_table"]) == searches.sum() + 1


def test_an_empty_history_scores_finite_values():
    ranker = small_ranker()
    zeros = torch.zeros(1, 6, dtype=torch.int64)
    no_queries = torch.zeros(1, 8)
    none = torch.zeros(1, dtype=torch.int64)
    no_items, no_bias = torch.zeros(0, 8), torch.zeros(0)
    added, today, ages = torch.zeros(31), torch.zeros(1), torch.zeros(1, 6)
    scores, _, mass = ranker(
        zeros,
        zeros,
        zeros,
        no_queries,
        no_items,
        no_bias,
        none,
        added,
        today,
        ages,
        none.unsqueeze(0),
    )
    assert torch.isfinite(scores).all() and mass.shape == (0,)


def test_new_items_gain_what_the_age_terms_learned_and_future_ones_gain_nothing(tmp_path):
    ranker = small_ranker()
    with torch.no_grad():
        ranker.age_weights.copy_(torch.tensor([50.0, 0.0, 0.0]))  # newness matters a lot
    session = ort.InferenceSession(str(export_ranker(ranker, tmp_path / "r.onnx")))
    inputs = ranker_inputs(ranker, 8, extra=2)
    inputs["item_added"] = np.full(33, 10_000.0, dtype=np.float32)  # all old
    inputs["item_added"][32] = 20_500.0  # the second extra item: added today
    inputs["item_added"][5] = 20_510.0  # item 5: added in ten days (a clock behind)
    inputs["user_days"] = np.full(8, 20_500.5, dtype=np.float32)
    inputs["exclude_ids"] = np.zeros((8, 1), dtype=np.int64)
    inputs["blocked_ids"] = np.zeros(1, dtype=np.int64)
    scores, indices = session.run(["scores", "indices"], inputs)
    assert (indices[:, 0] == 32).all()  # the new item leads every list
    with torch.no_grad():
        ranker.age_weights.zero_()
    plain = ort.InferenceSession(str(export_ranker(ranker, tmp_path / "plain.onnx")))
    plain_scores, plain_indices = plain.run(["scores", "indices"], inputs)
    # item 5, added "later", scores as without the age terms: no boost, never masked
    got = dict(zip(indices[0].tolist(), scores[0].tolist(), strict=True))
    want = dict(zip(plain_indices[0].tolist(), plain_scores[0].tolist(), strict=True))
    if 5 in got and 5 in want:
        assert abs(got[5] - want[5]) < 1e-4
    assert (scores > -1e4).all()


def test_extra_items_rank_and_blocked_items_never_do(tmp_path):
    ranker = small_ranker()
    session = ort.InferenceSession(str(export_ranker(ranker, tmp_path / "r.onnx")))
    inputs = ranker_inputs(ranker, 64, extra=5)
    user = 0
    with torch.no_grad():
        hidden = ranker(*(torch.from_numpy(v) for v in inputs.values()))
    # an extra item pointing along a user's vector tops that user's list
    _, plain = session.run(["scores", "indices"], {**inputs, "blocked_ids": np.array([0])})
    assert plain.max() <= 30 + 5 and hidden[1].shape == plain.shape
    favourite = int(plain[user, 0])
    inputs["blocked_ids"] = np.array([0, favourite], dtype=np.int64)
    _, blocked = session.run(["scores", "indices"], inputs)
    assert favourite not in blocked  # for every user, not only the one whose top it was
    inputs["extra_items"] = np.zeros((0, 8), dtype=np.float32)
    inputs["extra_bias"] = np.zeros(0, dtype=np.float32)
    inputs["item_added"] = inputs["item_added"][:31]
    inputs["item_ids"] = np.minimum(inputs["item_ids"], 30)
    inputs["exclude_ids"] = np.minimum(inputs["exclude_ids"], 30)
    inputs["blocked_ids"] = np.minimum(inputs["blocked_ids"], 30)  # an extra favourite: 30
    _, without = session.run(["scores", "indices"], inputs)
    assert without.max() <= 30 and min(favourite, 30) not in without


def test_an_extra_items_bias_moves_it_and_its_mass_is_counted_before_the_bias(tmp_path):
    ranker = small_ranker()
    session = ort.InferenceSession(str(export_ranker(ranker, tmp_path / "r.onnx")))
    inputs = ranker_inputs(ranker, 64, extra=5)
    inputs["blocked_ids"] = np.array([0], dtype=np.int64)
    inputs["extra_bias"] = np.zeros(5, dtype=np.float32)
    scores, indices, mass = session.run(None, inputs)
    excluded = (inputs["exclude_ids"] == 31).any(axis=1)  # users who may not get item 31
    assert mass.shape == (5,) and (mass > 0).all() and mass.sum() < 64
    inputs["extra_bias"][0] = 50.0  # clicked far beyond what the model expected
    lifted_scores, lifted, lifted_mass = session.run(None, inputs)
    assert (lifted[~excluded, 0] == 31).all() and (lifted[excluded] != 31).all()
    np.testing.assert_allclose(lifted_mass, mass, rtol=1e-6)  # the mass ignores the bias
    inputs["extra_bias"][0] = -50.0  # never clicked although expected: sinks below the rest
    _, sunk, _ = session.run(None, inputs)
    assert (sunk[:, :9] != 31).all()
    assert (lifted_scores > -1e4).sum() == (scores > -1e4).sum()  # masked items stay masked


def test_top10_identity_allows_swaps_within_a_tie_only():
    from model_export.export.parity import _identical_up_to_ties

    scores = np.array([[3.0, 2.0, 2.0 + 1e-7, 1.0], [3.0, 2.0, 1.5, 1.0]])
    indices = np.array([[7, 8, 9, 5], [7, 8, 9, 5]])
    tie_swapped = np.array([[7, 9, 8], [7, 8, 9]])
    assert _identical_up_to_ties(tie_swapped, scores, indices) == 1.0
    real_swap = np.array([[7, 8, 9], [7, 9, 8]])
    assert _identical_up_to_ties(real_swap, scores, indices) == 0.5
