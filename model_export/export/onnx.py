"""Export a trained model into a model directory, validating parity before it is written.

The export contract is defined here once: file names, input/output names (from
:mod:`stream.contracts.manifest`), dynamic axes, opset, and the parity thresholds (from
:mod:`model_export.export.parity`). ``manifest.json`` is written last, after every file passed its
parity check: a directory without one is never served.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from model_export.data.sources import CatalogueItem
from model_export.export.parity import (
    check_item_tower,
    check_query_encoder,
    check_query_encoder_int8,
    check_ranker,
    ranker_inputs,
)
from model_export.model.ranker import SequenceRanker
from model_export.model.text import TextEncoder, pretrained_dir
from model_export.training.train import TrainedModel
from stream.contracts.manifest import (
    DAY_MS,
    ITEM_ID_VECTORS,
    ITEM_VECTORS,
    MANIFEST_FILE,
    QUERY_ENCODER,
    QUERY_ENCODER_INT8,
    QUERY_INPUTS,
    QUERY_OUTPUTS,
    RANKER,
    RANKER_FP16,
    RANKER_INPUTS,
    RANKER_OUTPUTS,
    TOKENIZER,
    ModelFile,
    ModelManifest,
    sha256_file,
    write_manifest,
)
from stream.errors import ModelExportError
from stream.model.queries import tokenize

OPSET = 18
FILES = {
    RANKER: "ranker.onnx",
    RANKER_FP16: "ranker.fp16.onnx",
    QUERY_ENCODER: "query_encoder.onnx",
    QUERY_ENCODER_INT8: "query_encoder.int8.onnx",
    TOKENIZER: "tokenizer.json",
    ITEM_VECTORS: "item_vectors.npy",
    ITEM_ID_VECTORS: "item_id_vectors.npy",
}
#: Axes fixed at export (from the model config); every other named axis is dynamic.
FIXED_AXES = frozenset({"history", "max_k", "query_dim"})


def dynamic_axes(*specs: Any) -> dict[str, dict[int, str]]:
    """ONNX dynamic axes of tensor specs: every named axis not in :data:`FIXED_AXES`."""
    return {
        spec.name: {i: str(axis) for i, axis in enumerate(spec.shape) if axis not in FIXED_AXES}
        for spec in specs
    }


class QueryTower(nn.Module):
    """Query text to ``query_dim`` vectors (:meth:`SequenceRanker.query_vectors`).

    The fine-tuned encoder's unit vector projected for the ranker (the ranker part), then
    the unit vector itself (the search part).
    """

    def __init__(self, encoder: TextEncoder, ranker: SequenceRanker) -> None:
        super().__init__()
        self.encoder = encoder
        self.ranker = ranker

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, dim]`` query vectors."""
        return self.ranker.query_vectors(self.encoder(input_ids, attention_mask))


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, specs: Any) -> Path:
    inputs, outputs = specs
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes=dynamic_axes(*inputs, *outputs),
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def _ranker_example(ranker: SequenceRanker) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(v) for v in ranker_inputs(ranker, 2).values())


def export_ranker(ranker: SequenceRanker, path: Path) -> Path:
    """Write the ranker's graph under the export contract."""
    return _export(ranker, _ranker_example(ranker), path, (RANKER_INPUTS, RANKER_OUTPUTS))


class HalfRanker(nn.Module):
    """The ranker in fp16, with the fp32/int64 inputs and outputs of the contract."""

    def __init__(self, ranker: SequenceRanker) -> None:
        super().__init__()
        self.ranker = copy.deepcopy(ranker).half().eval()

    def forward(
        self,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        query_ids: torch.Tensor,
        query_table: torch.Tensor,
        extra_items: torch.Tensor,
        extra_bias: torch.Tensor,
        blocked_ids: torch.Tensor,
        item_added: torch.Tensor,
        user_days: torch.Tensor,
        event_ages: torch.Tensor,
        exclude_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Same as :meth:`SequenceRanker.forward`, in half precision (ages and mass in fp32)."""
        scores, indices, mass = self.ranker(
            item_ids,
            event_types,
            query_ids,
            query_table.half(),
            extra_items.half(),
            extra_bias,
            blocked_ids,
            item_added,
            user_days,
            event_ages,
            exclude_ids,
        )
        return scores.float(), indices, mass


def export_fp16(ranker: SequenceRanker, path: Path) -> Path:
    """An fp16 ranker for GPUs (inputs and outputs stay fp32/int64)."""
    return _export(
        HalfRanker(ranker), _ranker_example(ranker), path, (RANKER_INPUTS, RANKER_OUTPUTS)
    )


def export_query_encoder(tower: QueryTower, tokenizer: Tokenizer, path: Path) -> Path:
    """Write the query encoder's graph (dynamic batch and token count)."""
    inputs = tokenize(tokenizer, ["star wars", "a longer example query"])
    example = (torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"]))
    return _export(tower, example, path, (QUERY_INPUTS, QUERY_OUTPUTS))


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Only errors through the root logger meanwhile (ONNX Runtime's tools log through it)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def fuse_query_encoder(path: Path, config: Any) -> dict[str, int]:
    """Rewrite the encoder graph at ``path`` with ONNX Runtime's BERT fusions, in place.

    ONNX Runtime's basic optimisations first fold the exported graph's shape arithmetic;
    then each layer's attention becomes one ``Attention`` operator and the embeddings one
    ``EmbedLayerNormalization`` (contrib operators of the CPU and CUDA providers alike).
    A search's query, a few tokens, runs about a fifth of the operators it did, in 0.85 of
    the time on CPU. The numbers do not change beyond float rounding (``check_query_encoder``
    checks the fused graph). Returns the count of each fused operator.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        # (it warns, and prints, that shape inference failed on this graph: fusions need none)
        model = optimize_model(
            str(path),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=1,
            use_gpu=False,
        )
        model.save_model_to_file(str(path))
    return {op: count for op, count in model.get_fused_operator_statistics().items() if count}


def export_query_encoder_int8(encoder_path: Path, path: Path) -> Path:
    """The query encoder with int8 weights (dynamic, per channel) for CPU hosts."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_root_logger():  # the quantiser logs advice on pre-processing
        quantize_dynamic(
            encoder_path,
            path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # the fused operators' outputs have no inferred type: they are all float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return path


def export(
    trained: TrainedModel,
    catalogue: Sequence[CatalogueItem],
    out_dir: str | Path,
    info: dict[str, Any],
) -> ModelManifest:
    """Export ``trained``, trained on ``catalogue``, to ``out_dir``: files, then ``manifest.json``.

    Raises:
        ModelExportError: if a parity check fails (nothing is marked servable then).
    """
    ranker = trained.ranker.eval()
    items = tuple(i.item_id for i in catalogue)
    if len(items) != ranker.config.num_items:
        msg = f"{len(items)} item ids for a ranker of {ranker.config.num_items} items"
        raise ModelExportError(msg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    ranker_path = export_ranker(ranker, out / FILES[RANKER])
    np.save(out / FILES[ITEM_VECTORS], ranker.unit_item_vectors().numpy(), allow_pickle=False)
    with torch.no_grad():  # id parts, zero-padded to query_dim: id part + text vector adds up
        ids = ranker.id_parts().float()
        padding = torch.zeros(len(ids), ranker.config.search_dim)
        id_vectors = torch.cat([ids, padding], dim=1).numpy()
    np.save(out / FILES[ITEM_ID_VECTORS], id_vectors, allow_pickle=False)
    fp16_path = export_fp16(ranker, out / FILES[RANKER_FP16])
    parity: dict[str, Any] = {"ranker": check_ranker(ranker, ranker_path, fp16_path)}
    written = [RANKER, RANKER_FP16, ITEM_VECTORS, ITEM_ID_VECTORS]
    max_tokens = int(trained.report["train_config"]["text"]["max_tokens"])
    if trained.encoder is not None and trained.tokenizer is not None:
        tower = QueryTower(trained.encoder, ranker).eval()
        query_path = export_query_encoder(tower, trained.tokenizer, out / FILES[QUERY_ENCODER])
        fused = fuse_query_encoder(query_path, tower.encoder.bert.config)
        parity["query_encoder"] = {
            **check_query_encoder(tower, trained.tokenizer, query_path),
            "fused_operators": fused,
        }
        parity["item_tower"] = check_item_tower(
            ranker, ranker_path, query_path, trained.tokenizer, id_vectors, catalogue
        )
        shutil.copyfile(pretrained_dir() / "tokenizer.json", out / FILES[TOKENIZER])
        written += [QUERY_ENCODER, TOKENIZER]
        int8_path = export_query_encoder_int8(query_path, out / FILES[QUERY_ENCODER_INT8])
        parity["query_encoder_int8"] = check_query_encoder_int8(
            ranker, ranker_path, query_path, int8_path, trained.tokenizer
        )
        if parity["query_encoder_int8"]["passed"]:
            written.append(QUERY_ENCODER_INT8)
        else:  # an optimisation only: the fp32 encoder serves CPU hosts as well
            int8_path.unlink()
    files = {role: ModelFile(FILES[role], sha256_file(out / FILES[role])) for role in written}
    created = datetime.now(UTC)
    manifest = ModelManifest(
        model_version=f"seqrec-{created:%Y%m%dT%H%M%SZ}-{files[RANKER].sha256[:8]}",
        files=files,
        items=items,
        history_length=ranker.config.history_length,
        max_k=ranker.config.max_k,
        query_dim=ranker.config.query_dim,
        search_dim=ranker.config.search_dim,
        query_max_tokens=max_tokens,
        opset=OPSET,
        created_at=created.isoformat(timespec="seconds"),
        item_texts=tuple(i.text for i in catalogue),
        item_added_ms=tuple(
            int(round(float(d) * DAY_MS)) for d in ranker.item_added[1:].double().tolist()
        ),
        versions={
            package: version(package)
            for package in ("streamrec", "torch", "onnx", "onnxruntime-gpu", "transformers")
        },
        training={**info, **trained.report, "parity": parity},
    )
    write_manifest(out, manifest)
    return manifest
