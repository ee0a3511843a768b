"""SSR policy ``prune``: keep the most relevant visual tokens (method §5a).

The relevance is RoPE-aware and computed over the *current* visual span.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor

from halfv.interfaces import SSRPolicy
from halfv.ops.selection import topk_indices

__all__ = ["TopKPrune"]


class TopKPrune(SSRPolicy):
    """Keep the ``keep`` most relevant visual tokens (attention only, no diversity step).

    Ties in relevance go to the lower index (:func:`halfv.ops.selection.topk_indices`).
    """

    name: ClassVar[str] = "prune"
    mode: ClassVar[Literal["prune", "freeze", "none"]] = "prune"
    needs_scores: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return topk_indices(scores, keep)
