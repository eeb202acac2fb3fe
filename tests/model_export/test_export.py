import numpy as np
import onnx
import pytest
import torch

from model_export.export import DYNAMIC_AXES, OPSET, check_parity, export_onnx, sample_inputs
from model_export.model import HistoryRanker, RankerConfig
from stream.errors import ModelExportError
from stream.manifest import load_manifest


def test_exported_graph_follows_the_contract(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    graph = onnx.load(str(tiny_model_dir / manifest.onnx_file)).graph
    assert [i.name for i in graph.input] == ["item_ids", "event_types", "exclude_ids"]
    assert [o.name for o in graph.output] == ["scores", "indices"]
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"  # dynamic batch
    assert manifest.opset == OPSET and "exclude_ids" in DYNAMIC_AXES
    assert manifest.training["parity"]["max_abs_score_diff"] <= 1e-4
    assert manifest.training["valid"]["hr@10"] > 0


def test_parity_check_passes_on_a_faithful_export(tmp_path):
    model = HistoryRanker(RankerConfig(num_items=30, dim=8, history_length=6, max_k=10)).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    report = check_parity(model, path, batches=(1, 64, 512))
    assert report["max_abs_score_diff"] <= 1e-4 and report["top10_identical"] == 1.0


def test_parity_check_collects_every_mismatch(tmp_path):
    model = HistoryRanker(RankerConfig(num_items=30, dim=8, history_length=6, max_k=10)).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    with torch.no_grad():
        model.item_bias.add_(torch.linspace(0, 1, 31))  # PyTorch now differs from the file
    with pytest.raises(ModelExportError) as caught:
        check_parity(model, path, batches=(1, 64))
    assert str(caught.value).count("batch") >= 2  # both batches reported, not just the first


def test_sample_inputs_are_left_padded_with_variable_lengths():
    model = HistoryRanker(RankerConfig(num_items=30, history_length=6))
    inputs = sample_inputs(model, 50)
    lengths = (inputs["event_types"] > 0).sum(axis=1)
    assert lengths.min() >= 1 and len(np.unique(lengths)) > 1
    assert all(
        (row[: 6 - n] == 0).all() for row, n in zip(inputs["item_ids"], lengths, strict=False)
    )
