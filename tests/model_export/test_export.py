import numpy as np
import onnx
import pytest
import torch

from model_export.export import OPSET, dynamic_axes, export_fp16, export_ranker
from model_export.model import RankerConfig, SequenceRanker
from model_export.parity import check_ranker, ranker_inputs
from stream.errors import ModelExportError
from stream.manifest import RANKER_INPUTS, load_manifest


def small_ranker(**changes):
    config = RankerConfig(
        num_items=30, dim=8, history_length=6, max_k=10, use_text=False, **changes
    )
    ranker = SequenceRanker(config).eval()
    ranker.set_cooc(torch.rand(31, 31) * 5)
    return ranker


def test_exported_graphs_follow_the_contract(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    ranker = onnx.load(str(manifest.path(tiny_model_dir, "ranker"))).graph
    assert [i.name for i in ranker.input] == [s.name for s in RANKER_INPUTS]
    assert [o.name for o in ranker.output] == ["scores", "indices"]
    assert ranker.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    encoder = onnx.load(str(manifest.path(tiny_model_dir, "query_encoder"))).graph
    dims = [d.dim_param for d in encoder.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "tokens"]  # dynamic batch and length
    assert manifest.opset == OPSET and "exclude_ids" in dynamic_axes(*RANKER_INPUTS)
    parity = manifest.training["parity"]
    assert parity["ranker"]["max_abs_score_diff"] <= 1e-4
    assert parity["ranker"]["top10_identical"] >= 0.999
    assert parity["ranker"]["fp16_top10_overlap"] >= 0.99
    assert parity["query_encoder"]["max_abs_vector_diff"] <= 1e-4
    int8 = parity["query_encoder_int8"]
    assert int8["passed"] and int8["top10_overlap"] >= 0.99 and int8["mean_cosine"] > 0.95
    assert manifest.files["query_encoder_int8"].file == "query_encoder.int8.onnx"


def test_parity_passes_on_a_faithful_export_with_fp16(tmp_path):
    ranker = small_ranker()
    path = export_ranker(ranker, tmp_path / "r.onnx")
    half = export_fp16(ranker, tmp_path / "r16.onnx")
    report = check_ranker(ranker, path, half, batches=(1, 64, 512))
    assert report["max_abs_score_diff"] <= 1e-4 and report["top10_identical"] == 1.0
    assert report["fp16_top10_overlap"] >= 0.99


def test_parity_check_collects_every_mismatch(tmp_path):
    ranker = small_ranker()
    path = export_ranker(ranker, tmp_path / "r.onnx")
    with torch.no_grad():
        ranker.item_emb.weight.add_(torch.randn_like(ranker.item_emb.weight))  # now differs
    with pytest.raises(ModelExportError) as caught:
        check_ranker(ranker, path, batches=(1, 64))
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
    scores, _ = ranker(zeros, zeros, zeros, no_queries, torch.zeros(1, 1, dtype=torch.int64))
    assert torch.isfinite(scores).all()


def test_top10_identity_allows_swaps_within_a_tie_only():
    from model_export.parity import _identical_up_to_ties

    scores = np.array([[3.0, 2.0, 2.0 + 1e-7, 1.0], [3.0, 2.0, 1.5, 1.0]])
    indices = np.array([[7, 8, 9, 5], [7, 8, 9, 5]])
    tie_swapped = np.array([[7, 9, 8], [7, 8, 9]])
    assert _identical_up_to_ties(tie_swapped, scores, indices) == 1.0
    real_swap = np.array([[7, 8, 9], [7, 9, 8]])
    assert _identical_up_to_ties(real_swap, scores, indices) == 0.5
