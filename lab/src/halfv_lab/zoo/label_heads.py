"""Pooled per-image heads on the projected visual tokens: a training aid for the tower.

:mod:`halfv_lab.data.image_labels` gives every training image a class per head (shape, colour,
counts, left/right, glyph). :class:`ImageLabelHeads` reads the visual tokens the projector
hands to the LM (through :class:`halfv_lab.zoo.answer_probe.ProjectorTap`, no second vision
pass), pools them with a mean plus a few learned attention queries, and classifies every
head at once; the loss is the mean over heads of each head's cross-entropy on the images
it applies to. Unlike the answer probe, no question is involved: the tower is told what
each image shows. ``TrainConfig.label_weight`` adds the loss to training (with
``vision_only``, alone), and :func:`evaluate_label_heads` measures each head on held-out
images. Like the probe, the heads are not part of a checkpoint: :func:`save_label_heads`
writes them beside it (``label_heads.safetensors``, kept out of git) only so that a
continued run starts from them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from halfv_lab.data import load_split
from halfv_lab.data.image_labels import LABEL_HEADS, UNKNOWN, LabelHead, label_row
from halfv_lab.zoo.answer_probe import ProjectorTap
from halfv_lab.zoo.checkpoint import load_beside, save_beside

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from halfv_lab.zoo.processing import VQAProcessor

__all__ = [
    "LABEL_HEADS_NAME",
    "ImageLabelHeads",
    "evaluate_label_heads",
    "label_targets",
    "load_label_heads",
    "save_label_heads",
]

LABEL_HEADS_NAME = "label_heads.safetensors"
"""File name of saved heads inside a checkpoint folder (not committed)."""

log = logging.getLogger(__name__)


class ImageLabelHeads(nn.Module):
    """Mean plus attention pooling of visual tokens, then one classifier per label head.

    Runs in float32 with autocast off, as the answer probe does.

    Args:
        dim: width of the visual tokens (the LM's hidden size).
        heads: the label heads (default :data:`halfv_lab.data.image_labels.LABEL_HEADS`).
        queries: learned pooling queries (several let it look at several places).
        attention_heads: heads of the pooling attention.
    """

    def __init__(
        self,
        dim: int,
        heads: Sequence[LabelHead] = LABEL_HEADS,
        *,
        queries: int = 8,
        attention_heads: int = 8,
    ) -> None:
        super().__init__()
        if dim % attention_heads:
            msg = f"attention_heads={attention_heads} must divide the token width {dim}"
            raise ValueError(msg)
        self.heads = tuple(heads)
        self.attention_heads = attention_heads
        self.norm = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.keys = nn.Linear(dim, dim)
        self.values = nn.Linear(dim, dim)
        width = (queries + 1) * dim
        sizes = [len(h.classes) for h in self.heads]
        self.classifier = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, 2 * dim),
            nn.GELU(),
            nn.Linear(2 * dim, sum(sizes)),
        )
        self.splits = sizes

    def forward(self, visual: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head (``[B, classes]`` each) from visual tokens ``[B, N, dim]``."""
        with torch.autocast(visual.device.type, enabled=False):
            v = self.norm(visual.float())
            b, n, dim = v.shape
            h, d = self.attention_heads, dim // self.attention_heads
            q = self.queries.view(1, -1, h, d).transpose(1, 2)
            k = self.keys(v).view(b, n, h, d).transpose(1, 2)
            val = self.values(v).view(b, n, h, d).transpose(1, 2)
            attn = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
            pooled = (attn @ val).transpose(1, 2).reshape(b, -1)
            logits = self.classifier(torch.cat([v.mean(1), pooled], 1))
        return list(logits.split(self.splits, dim=1))

    def loss(self, visual: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over heads of each head's cross-entropy on the images it applies to.

        ``targets``: ``[B, heads]`` class indices, :data:`UNKNOWN` where a label does not
        apply. Heads with no label in the batch do not count. No host synchronisation.
        """
        logits = self(visual)
        total = visual.new_zeros((), dtype=torch.float32)
        present = visual.new_zeros((), dtype=torch.float32)
        for j, head_logits in enumerate(logits):
            target = targets[:, j]
            known = (target != UNKNOWN).sum()
            summed = F.cross_entropy(head_logits, target, ignore_index=UNKNOWN, reduction="sum")
            total = total + summed / known.clamp_min(1)
            present = present + (known > 0).float()
        return total / present.clamp_min(1.0)

    def correct(self, visual: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[heads, 2]``: right answers and labelled images per head on one batch."""
        rows = []
        for j, head_logits in enumerate(self(visual)):
            target = targets[:, j]
            known = target != UNKNOWN
            right = (head_logits.argmax(-1) == target) & known
            rows.append(torch.stack([right.sum(), known.sum()]))
        return torch.stack(rows)


def label_targets(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """``[B, heads]`` long targets from :func:`halfv_lab.data.image_labels.label_row` rows."""
    return torch.tensor([list(r) for r in rows], dtype=torch.long, device=device)


@torch.no_grad()
def evaluate_label_heads(
    model: PreTrainedModel,
    processor: VQAProcessor,
    heads: ImageLabelHeads,
    family: str,
    datasets: Sequence[str],
    *,
    split: str = "test",
    limit: int = 1000,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Accuracy of every label head on the first ``limit`` images of each dataset's split.

    Returns:
        ``{head name: {"accuracy", "n"}}`` for heads with at least one labelled image, and
        ``"mean"``: the unweighted mean of those accuracies.
    """
    device = next(heads.parameters()).device
    counts = torch.zeros(len(heads.heads), 2, dtype=torch.long, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for name in datasets:
        items = list(load_split(name, split, limit=limit))
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            pixels = processor.preprocess_images([it.image for it in chunk], device)
            with ProjectorTap(model, family) as tap, autocast:
                model.model.get_image_features(**processor.vision_inputs(pixels, len(chunk)))
                visual = tap.take(len(chunk))
            targets = label_targets([label_row(it) for it in chunk], device)
            counts += heads.correct(visual, targets)
    out: dict[str, Any] = {}
    for head, (right, total) in zip(heads.heads, counts.tolist(), strict=True):
        if total:
            out[head.name] = {"accuracy": round(right / total, 4), "n": total}
    scores = [v["accuracy"] for v in out.values()]
    out["mean"] = round(sum(scores) / len(scores), 4) if scores else float("nan")
    return out


def save_label_heads(heads: ImageLabelHeads, folder: str | Path) -> Path:
    """Write the heads' weights to ``folder / LABEL_HEADS_NAME``."""
    return save_beside(heads, Path(folder) / LABEL_HEADS_NAME, _signature(heads.heads))


def load_label_heads(heads: ImageLabelHeads, folder: str | Path) -> bool:
    """Load ``folder / LABEL_HEADS_NAME`` into ``heads`` if it exists with the same heads."""
    return load_beside(heads, Path(folder) / LABEL_HEADS_NAME, _signature(heads.heads))


def _signature(heads: Sequence[LabelHead]) -> str:
    return "\n".join(f"{h.name}:{','.join(h.classes)}" for h in heads)
