"""The training aids that read a zoo model's projector output: answer probe, label heads.

Both are trained beside the vision tower and projector and are not part of a checkpoint
(:mod:`halfv_lab.zoo.answer_probe`, :mod:`halfv_lab.zoo.label_heads`); :func:`build_aids` makes
the ones a run asks for and restores them from the checkpoint a run continues.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from halfv_lab.zoo.answer_probe import AnswerProbe, build_probe, load_probe, save_probe
from halfv_lab.zoo.label_heads import ImageLabelHeads, load_label_heads, save_label_heads

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["TrainingAids", "build_aids"]

log = logging.getLogger(__name__)


@dataclass
class TrainingAids:
    """The answer probe and the label heads of a run (either may be absent)."""

    probe: AnswerProbe | None = None
    label_heads: ImageLabelHeads | None = None

    def modules(self) -> list[nn.Module]:
        """The aids present, probe first."""
        return [m for m in (self.probe, self.label_heads) if m is not None]

    def save(self, folder: str | Path) -> list[Path]:
        """Write each aid present beside a checkpoint in ``folder``; returns the files."""
        out = []
        if self.probe is not None:
            out.append(save_probe(self.probe, folder))
        if self.label_heads is not None:
            out.append(save_label_heads(self.label_heads, folder))
        return out


def build_aids(
    model: PreTrainedModel,
    *,
    probe_datasets: Sequence[str] | None,
    label_heads: bool,
    init_from: str | Path | None = None,
) -> TrainingAids:
    """Make the aids asked for, restoring each from ``init_from`` where it was saved.

    Args:
        model: the zoo model whose projector they read.
        probe_datasets: build an answer probe over these datasets' answers (None: no probe).
        label_heads: build the per-image label heads.
        init_from: a checkpoint folder a continued run starts from.
    """
    aids = TrainingAids()
    if probe_datasets is not None:
        aids.probe = build_probe(model, probe_datasets)
        if init_from:
            _report("answer probe", load_probe(aids.probe, init_from), init_from)
    if label_heads:
        aids.label_heads = ImageLabelHeads(model.config.get_text_config().hidden_size)
        if init_from:
            _report("label heads", load_label_heads(aids.label_heads, init_from), init_from)
    return aids


def _report(what: str, restored: bool, folder: str | Path) -> None:
    if restored:
        log.info("%s restored from %s", what, folder)
    else:
        log.info("no matching %s in %s: it starts afresh", what, folder)
