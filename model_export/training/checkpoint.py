"""Trained-model checkpoints between ``train`` and ``export``: safetensors and JSON only.

Layout: ``checkpoint.json`` (format, item ids, configs, training report),
``ranker.safetensors`` (weights and buffers) and, for models with the language-model part,
``text_encoder/`` (the fine-tuned MiniLM in Hugging Face format). Nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from safetensors.torch import load_file, save_file

from model_export.data.sources import CatalogueItem
from model_export.model.ranker import RankerConfig, SequenceRanker
from model_export.model.text import TextEncoder, text_tokenizer
from model_export.training.train import TrainedModel
from stream.errors import ModelExportError

CHECKPOINT_FORMAT = 3
CHECKPOINT_FILE = "checkpoint.json"


def save_checkpoint(
    trained: TrainedModel, catalogue: Sequence[CatalogueItem], path: str | Path
) -> Path:
    """Write ``trained`` and the catalogue it was trained on under ``path`` (a directory)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in trained.ranker.state_dict().items()}
    save_file(state, str(out / "ranker.safetensors"))
    if trained.encoder is not None:
        trained.encoder.bert.save_pretrained(str(out / "text_encoder"))
    body: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "items": [i.item_id for i in catalogue],
        "texts": [i.text for i in catalogue],
        "model_config": trained.report["model_config"],
        "report": trained.report,
    }
    (out / CHECKPOINT_FILE).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return out


def load_checkpoint(path: str | Path) -> tuple[TrainedModel, list[CatalogueItem]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ModelExportError: if the directory is not a checkpoint of this format.
    """
    root = Path(path)
    try:
        body = orjson.loads((root / CHECKPOINT_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        msg = f"{root} is not a checkpoint ({exc}); run `python -m model_export train --out {root}`"
        raise ModelExportError(msg) from exc
    if body.get("format") != CHECKPOINT_FORMAT:
        msg = (
            f"{root / CHECKPOINT_FILE}: checkpoint format {body.get('format')!r} unsupported "
            f"(this model_export reads {CHECKPOINT_FORMAT}); train again: make model"
        )
        raise ModelExportError(msg)
    config = RankerConfig(**body["model_config"])
    ranker = SequenceRanker(config)
    ranker.load_state_dict(load_file(str(root / "ranker.safetensors")))
    ranker.eval()
    encoder = tokenizer = None
    if config.use_text:
        encoder = TextEncoder.from_pretrained(root / "text_encoder").eval()
        tokenizer = text_tokenizer(body["report"]["train_config"]["text"]["max_tokens"])
    catalogue = [CatalogueItem(i, t) for i, t in zip(body["items"], body["texts"], strict=True)]
    return TrainedModel(ranker, encoder, tokenizer, body["report"]), catalogue
