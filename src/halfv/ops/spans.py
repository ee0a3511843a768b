"""Finding the visual spans of a prompt.

A *visual span* is a maximal run of consecutive visual token ids (image or video
placeholders) in one sample's ``input_ids``. Every image, every tile group and every
video in a prompt is its own span (as long as some other token separates them), and every
span gets its own budget. Pure tensor code: no model needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from halfv.errors import HalfvValueError

__all__ = ["VisualSpans", "find_visual_spans", "spans_from_mask"]


@dataclass(frozen=True)
class VisualSpans:
    """Where the visual tokens of a batch are.

    Attributes:
        mask: ``[B, T]`` bool, True on visual tokens (on the ids' device).
        spans: per sample, a tuple of ``(start, length)`` runs in increasing order.
    """

    mask: Tensor
    spans: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def total(self) -> int:
        """Number of visual tokens in the whole batch."""
        return sum(length for sample in self.spans for _, length in sample)

    @property
    def any(self) -> bool:
        """Whether any sample has a visual token."""
        return self.total > 0


def find_visual_spans(
    input_ids: Tensor,
    visual_token_ids: Sequence[int],
    *,
    keep_positions: Tensor | None = None,
) -> VisualSpans:
    """Locate every visual span of every sample.

    This synchronises with the host once per call (span boundaries become Python ints),
    never once per token.

    Args:
        input_ids: ``[B, T]`` token ids.
        visual_token_ids: ids that stand for visual features.
        keep_positions: ``[B]`` one position per sample that is never counted as visual
            (the query position: a prompt that ends on an image token keeps that token).

    Returns:
        The visual mask and the per-sample spans.
    """
    if input_ids.dim() != 2:
        msg = f"input_ids must have shape [batch, seq], got {tuple(input_ids.shape)}"
        raise HalfvValueError(msg)
    if not visual_token_ids:
        msg = "visual_token_ids is empty: the adapter must name at least one visual token id"
        raise HalfvValueError(msg)
    ids = torch.tensor(list(visual_token_ids), dtype=input_ids.dtype)
    mask = torch.isin(input_ids, ids.to(input_ids.device, non_blocking=True))
    return spans_from_mask(mask, keep_positions=keep_positions)


def spans_from_mask(mask: Tensor, *, keep_positions: Tensor | None = None) -> VisualSpans:
    """The visual spans of a ``[B, T]`` bool mask (see :func:`find_visual_spans`)."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        shape = tuple(mask.shape)
        msg = f"a visual mask must be a [batch, seq] bool tensor, got {mask.dtype} {shape}"
        raise HalfvValueError(msg)
    if keep_positions is not None:
        index = keep_positions.to(mask.device).clamp(min=0)[:, None]
        mask = mask & ~torch.zeros_like(mask).scatter_(1, index, True)
    # Run boundaries: +1 where a run starts, -1 one past where it ends; read on the host
    # in one copy (the one sync), then listed there.
    padded = torch.nn.functional.pad(mask.to(torch.int8), (1, 1))
    edges = (padded[:, 1:] - padded[:, :-1]).cpu()
    starts = (edges == 1).nonzero().tolist()
    ends = (edges == -1).nonzero().tolist()
    per_sample: list[list[tuple[int, int]]] = [[] for _ in range(mask.shape[0])]
    for (b, s), (_, e) in zip(starts, ends, strict=True):
        per_sample[b].append((s, e - s))
    return VisualSpans(mask=mask, spans=tuple(tuple(s) for s in per_sample))
