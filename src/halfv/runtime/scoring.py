"""Relevance from the projections a scoring layer computes anyway (model wiring).

HalfV scores visual tokens by the last prompt token's attention at the layer before a
pruning layer. That layer, running its own forward, already applies its input norm and
its query and key projections to every row. The runtime hooks those two ``nn.Linear``
modules and keeps their outputs, per call, during the scoring layer's prefill forward
(:class:`halfv.runtime.core.PruningRuntime`), then takes the query and visual rows from them
(:func:`halfv.ops.relevance.relevance_from_projections`) instead of norming and projecting the
visual tokens a second time. An attention module that does not call the adapter's
``q_proj`` / ``k_proj`` (a fused projection, a compiled graph) leaves the tap empty, and
:meth:`PendingScore.scores` falls back to :func:`halfv.ops.relevance.last_token_relevance` on
the layer's input.

Under tensor parallelism both paths see only this rank's heads; ``head_group`` (found by
:func:`halfv.runtime.distributed.head_group`) makes the relevance sum them over the ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from halfv.interfaces import AttentionParts, RotaryFn
from halfv.ops.relevance import last_token_relevance, relevance_from_projections

if TYPE_CHECKING:
    from halfv.runtime.distributed import HeadGroup

__all__ = ["PendingScore"]


@dataclass
class PendingScore:
    """A scoring layer's inputs, kept until its forward has run (scores are due next).

    Attributes:
        hidden: the scoring layer's input ``[B, S, D]`` (for the fallback).
        query_rows, visual_rows, segment, num_segments: as in
            :func:`halfv.ops.relevance.last_token_relevance`.
        parts: the scoring layer's internals.
        rotary: flattened ``(cos, sin)`` or ``None``.
        scale: whether logits are scaled by ``1/sqrt(head_dim)``.
        head_group: the tensor-parallel ranks that split the layer's heads, or ``None``.
        rotary_fn: the layer's own rotary function (``LayerSpec.rotary``), or ``None``
            for Llama's rotate-half.
        visible: ``[M]`` bool, the visual rows inside a sliding scoring layer's window
            (``None`` for a full-attention layer).
    """

    hidden: Tensor
    query_rows: Tensor
    visual_rows: Tensor
    segment: Tensor
    num_segments: int
    parts: AttentionParts
    rotary: tuple[Tensor, Tensor] | None
    scale: bool
    head_group: HeadGroup | None = None
    rotary_fn: RotaryFn | None = None
    visible: Tensor | None = None

    def scores(self, tapped: tuple[Tensor, Tensor] | None) -> Tensor:
        """Relevance per visual row, from the tapped projections when there are any."""
        common: dict[str, Any] = {
            "query_rows": self.query_rows,
            "visual_rows": self.visual_rows,
            "segment": self.segment,
            "num_segments": self.num_segments,
            "parts": self.parts,
            "rotary": self.rotary,
            "scale": self.scale,
            "head_group": self.head_group,
            "rotary_fn": self.rotary_fn,
            "visible": self.visible,
        }
        b, s = self.hidden.shape[:2]
        if tapped is None or tapped[0].shape[:2] != (b, s):
            return last_token_relevance(self.hidden, **common)
        q, k = (t.reshape(b * s, -1) for t in tapped)
        queries = q[self.query_rows.to(q.device)]
        keys = k[self.visual_rows.to(k.device)]
        return relevance_from_projections(queries, keys, rows_per_sample=s, **common)
