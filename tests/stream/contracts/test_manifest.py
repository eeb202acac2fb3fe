import shutil

import orjson
import pytest

from stream.contracts.manifest import FORMAT_VERSION, MANIFEST_FILE, load_manifest
from stream.errors import ModelLoadError


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def edit_manifest(model_dir, **changes):
    path = model_dir / MANIFEST_FILE
    body = orjson.loads(path.read_bytes())
    body.update(changes)
    path.write_bytes(orjson.dumps(body))


def test_a_written_directory_loads(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    assert manifest.format_version == FORMAT_VERSION
    assert len(manifest.items) == 1682 and manifest.items[0] == "1"
    assert [s.name for s in manifest.inputs] == [
        "item_ids",
        "event_types",
        "query_ids",
        "query_table",
        "extra_items",
        "extra_bias",
        "blocked_ids",
        "item_added",
        "user_days",
        "event_ages",
        "exclude_ids",
    ]
    assert [s.name for s in manifest.outputs] == ["scores", "indices", "extra_mass"]
    assert (manifest.query_dim, manifest.search_dim) == (16 + 384, 384)  # tiny: 16 wide
    assert len(manifest.item_texts) == len(manifest.items) == len(manifest.item_added_ms)
    assert min(manifest.item_added_ms) >= 874_724_710_000  # MovieLens' first rating (ms)
    assert manifest.item_texts[0].startswith("Toy Story (1995) | ")
    assert set(manifest.files) - {"query_encoder_int8"} == {
        "ranker",
        "ranker_fp16",
        "query_encoder",
        "tokenizer",
        "item_vectors",
        "item_id_vectors",
    }
    int8 = manifest.training["parity"]["query_encoder_int8"]["passed"]
    assert ("query_encoder_int8" in manifest.files) == int8  # shipped only if it passed
    assert manifest.versions["torch"].startswith("2.13")


def test_a_directory_from_before_the_live_catalogue_is_refused_saying_how_to_re_export(
    model_copy,
):
    edit_manifest(model_copy, format_version=2, features="streamrec.history/3")
    with pytest.raises(ModelLoadError, match="format_version 2 is not supported") as refused:
        load_manifest(model_copy)
    assert "live catalogue" in str(refused.value)


def test_a_directory_from_before_click_feedback_is_refused_saying_how_to_re_export(model_copy):
    edit_manifest(model_copy, format_version=3, features="streamrec.history/4")
    with pytest.raises(ModelLoadError, match="format_version 3 is not supported") as refused:
        load_manifest(model_copy)
    assert "click feedback" in str(refused.value) and "make model" in str(refused.value)
    assert "python -m model_export export --checkpoint" in str(refused.value)


def test_a_directory_from_before_the_search_term_is_refused_saying_how_to_re_export(model_copy):
    edit_manifest(model_copy, format_version=4, features="streamrec.history/5")
    with pytest.raises(ModelLoadError, match="format_version 4 is not supported") as refused:
        load_manifest(model_copy)
    assert "answers searches" in str(refused.value) and "make model" in str(refused.value)


def test_missing_directory_says_how_to_build_one(tmp_path):
    with pytest.raises(ModelLoadError, match="make model"):
        load_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "name",
    [
        "ranker.onnx",
        "ranker.fp16.onnx",
        "query_encoder.onnx",
        "tokenizer.json",
        "item_vectors.npy",
        "item_id_vectors.npy",
    ],
)
def test_truncated_file_is_refused_naming_the_file(model_copy, name):
    path = model_copy / name
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=rf"{name.replace('.', '[.]')} has sha256"):
        load_manifest(model_copy)


@pytest.mark.parametrize("name", ["ranker.onnx", "query_encoder.onnx"])
def test_missing_file_is_refused(model_copy, name):
    (model_copy / name).unlink()
    with pytest.raises(
        ModelLoadError, match=rf"{name.replace('.', '[.]')} named by .* does not exist"
    ):
        load_manifest(model_copy)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"features": "other/1"}, "feature set"),
        ({"inputs": []}, "lack"),
        ({"items": []}, "malformed"),
        ({"files": {"ranker": {"file": "../ranker.onnx", "sha256": "0"}}}, "malformed"),
        ({"files": {"query_encoder": {"file": "query_encoder.onnx", "sha256": "0"}}}, "malformed"),
    ],
)
def test_incompatible_manifests_are_refused(model_copy, changes, message):
    edit_manifest(model_copy, **changes)
    with pytest.raises(ModelLoadError, match=message):
        load_manifest(model_copy)


def test_manifest_that_is_not_json(model_copy):
    (model_copy / MANIFEST_FILE).write_text("{nope")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_manifest(model_copy)
