"""Finding the visual spans of a prompt.

A *visual span* is a maximal run of consecutive visual token ids (image or video
placeholders) in one sample's ``input_ids``. Every image, every tile group and every
video in a prompt is its own span (as long as some other token separates them), and every
span gets its own budget. Pure tensor code: no model needed.

Some processors split one image into several runs with marker tokens: Pixtral / Mistral3
end every row of patches with ``[IMG_BREAK]``. An adapter names such *span joiners*
(:meth:`halfv.BackboneAdapter.span_joiners`): runs separated only by joiner tokens form
one span, budgeted as a whole; the joiners inside it are not visual and are never pruned.
A span's ``(start, length)`` then covers its joiners too, and :attr:`VisualSpans.sizes`
counts only its visual tokens.
"""

from __future__ import annotations

import bisect
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
        spans: per sample, a tuple of ``(start, length)`` spans in increasing order: a
            run of visual tokens, or several runs joined by span joiners (then the span
            covers the joiners between its runs).
        sizes: per sample, the visual tokens of each span (its ``length`` less the
            joiners inside it); ``None`` when no span has joiners inside (sizes equal
            lengths).
    """

    mask: Tensor
    spans: tuple[tuple[tuple[int, int], ...], ...]
    sizes: tuple[tuple[int, ...], ...] | None = None

    @property
    def span_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Per sample, the visual tokens of each span (what its budget is a share of)."""
        if self.sizes is not None:
            return self.sizes
        return tuple(tuple(n for _, n in sample) for sample in self.spans)

    @property
    def total(self) -> int:
        """Number of visual tokens in the whole batch."""
        return sum(n for sample in self.span_sizes for n in sample)

    @property
    def any(self) -> bool:
        """Whether any sample has a visual token."""
        return self.total > 0


def find_visual_spans(
    input_ids: Tensor,
    visual_token_ids: Sequence[int],
    *,
    keep_positions: Tensor | None = None,
    joiner_ids: Sequence[int] = (),
) -> VisualSpans:
    """Locate every visual span of every sample.

    This synchronises with the host once per call (span boundaries become Python ints),
    never once per token.

    Args:
        input_ids: ``[B, T]`` token ids.
        visual_token_ids: ids that stand for visual features.
        keep_positions: ``[B]`` one position per sample that is never counted as visual
            (the query position: a prompt that ends on an image token keeps that token).
        joiner_ids: ids that join the visual runs on either side into one span (never
            visual themselves; see the module docstring).

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
    joiners = None
    if joiner_ids:
        overlap = set(joiner_ids) & set(visual_token_ids)
        if overlap:
            msg = f"token ids {sorted(overlap)} are both visual and span joiners: pick one"
            raise HalfvValueError(msg)
        jids = torch.tensor(list(joiner_ids), dtype=input_ids.dtype)
        joiners = torch.isin(input_ids, jids.to(input_ids.device, non_blocking=True))
    return spans_from_mask(mask, keep_positions=keep_positions, joiners=joiners)


def _runs(edges: Tensor) -> list[list[tuple[int, int]]]:
    """``(start, end)`` runs per sample from host-side ``[B, T+1]`` run edges."""
    per_sample: list[list[tuple[int, int]]] = [[] for _ in range(edges.shape[0])]
    starts = (edges == 1).nonzero().tolist()
    ends = (edges == -1).nonzero().tolist()
    for (b, s), (_, e) in zip(starts, ends, strict=True):
        per_sample[b].append((s, e))
    return per_sample


def spans_from_mask(
    mask: Tensor, *, keep_positions: Tensor | None = None, joiners: Tensor | None = None
) -> VisualSpans:
    """The visual spans of a ``[B, T]`` bool mask (see :func:`find_visual_spans`).

    ``joiners`` (``[B, T]`` bool) marks span-joiner tokens: visual runs separated only by
    joiners become one span.
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        shape = tuple(mask.shape)
        msg = f"a visual mask must be a [batch, seq] bool tensor, got {mask.dtype} {shape}"
        raise HalfvValueError(msg)
    if keep_positions is not None:
        index = keep_positions.to(mask.device).clamp(min=0)[:, None]
        mask = mask & ~torch.zeros_like(mask).scatter_(1, index, True)
    if joiners is not None:
        return _joined_spans(mask, joiners.to(mask.device) & ~mask)
    # Run boundaries: +1 where a run starts, -1 one past where it ends; read on the host
    # in one copy (the one sync), then listed there.
    padded = torch.nn.functional.pad(mask.to(torch.int8), (1, 1))
    runs = _runs((padded[:, 1:] - padded[:, :-1]).cpu())
    spans = tuple(tuple((s, e - s) for s, e in sample) for sample in runs)
    return VisualSpans(mask=mask, spans=spans)


def _joined_spans(mask: Tensor, joiners: Tensor) -> VisualSpans:
    """Spans of visual runs joined across joiner tokens (one host copy for both masks).

    A run of ``visual | joiner`` tokens holds one span: all the visual runs inside it
    (joiners before its first or after its last visual run are not part of the span).
    """
    both = torch.stack([mask, mask | joiners]).to(torch.int8)
    padded = torch.nn.functional.pad(both, (1, 1))
    edges = (padded[..., 1:] - padded[..., :-1]).cpu()
    spans: list[tuple[tuple[int, int], ...]] = []
    sizes: list[tuple[int, ...]] = []
    for visual, outer in zip(_runs(edges[0]), _runs(edges[1]), strict=True):
        outer_starts = [s for s, _ in outer]
        groups: dict[int, list[tuple[int, int]]] = {}
        for run in visual:  # each visual run lies inside exactly one visual|joiner run
            groups.setdefault(bisect.bisect_right(outer_starts, run[0]) - 1, []).append(run)
        members = [groups[k] for k in sorted(groups)]
        spans.append(tuple((g[0][0], g[-1][1] - g[0][0]) for g in members))
        sizes.append(tuple(sum(e - s for s, e in g) for g in members))
    return VisualSpans(mask=mask, spans=tuple(spans), sizes=tuple(sizes))
