"""Relevance from the projections a scoring layer computes anyway (model wiring).

HalfV scores visual tokens by the last prompt token's attention at the layer before a
pruning layer. That layer, running its own forward, already applies its input norm and
its query and key projections to every row. :class:`ProjectionTap` hooks those two
``nn.Linear`` modules and keeps their outputs during the scoring layer's prefill forward.
The runtime then takes the query and visual rows from them
(:func:`halfv.relevance.relevance_from_projections`) instead of norming and projecting the
visual tokens a second time. An attention module that does not call the adapter's
``q_proj`` / ``k_proj`` (a fused projection, a compiled graph) leaves the tap empty, and
:meth:`PendingScore.scores` falls back to :func:`halfv.relevance.last_token_relevance` on
the layer's input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from halfv.interfaces import AttentionParts
from halfv.relevance import last_token_relevance, relevance_from_projections

__all__ = ["PendingScore", "ProjectionTap"]


class ProjectionTap:
    """Forward hooks on the scoring layers' ``q_proj`` and ``k_proj``; idle until armed."""

    def __init__(self) -> None:
        self.armed: int | None = None
        self.outputs: dict[str, Tensor] = {}

    def install(self, layers: dict[int, AttentionParts]) -> list[RemovableHandle]:
        """Hook the projections of every scoring layer ``{index: parts}``."""
        handles = []
        for idx, parts in layers.items():
            for name, module in (("q", parts.q_proj), ("k", parts.k_proj)):
                handles.append(module.register_forward_hook(self._hook(idx, name)))
        return handles

    def _hook(self, idx: int, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if self.armed == idx and isinstance(output, Tensor):
                self.outputs[name] = output.detach()

        return hook

    def arm(self, idx: int) -> None:
        """Keep the next outputs of layer ``idx``'s projections."""
        self.armed, self.outputs = idx, {}

    def take(self) -> tuple[Tensor, Tensor] | None:
        """``(q, k)`` outputs ``[B, S, *]`` of the armed layer, or ``None``; disarms."""
        q, k = self.outputs.get("q"), self.outputs.get("k")
        self.armed, self.outputs = None, {}
        if q is None or k is None or q.dim() != 3 or k.dim() != 3:
            return None
        return q, k


@dataclass
class PendingScore:
    """A scoring layer's inputs, kept until its forward has run (scores are due next).

    Attributes:
        hidden: the scoring layer's input ``[B, S, D]`` (for the fallback).
        query_rows, visual_rows, segment, num_segments: as in
            :func:`halfv.relevance.last_token_relevance`.
        parts: the scoring layer's internals.
        rotary: flattened ``(cos, sin)`` or ``None``.
        scale: whether logits are scaled by ``1/sqrt(head_dim)``.
    """

    hidden: Tensor
    query_rows: Tensor
    visual_rows: Tensor
    segment: Tensor
    num_segments: int
    parts: AttentionParts
    rotary: tuple[Tensor, Tensor] | None
    scale: bool

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
        }
        b, s = self.hidden.shape[:2]
        if tapped is None or tapped[0].shape[:2] != (b, s):
            return last_token_relevance(self.hidden, **common)
        q, k = (t.reshape(b * s, -1) for t in tapped)
        queries = q[self.query_rows.to(q.device)]
        keys = k[self.visual_rows.to(k.device)]
        return relevance_from_projections(queries, keys, rows_per_sample=s, **common)
