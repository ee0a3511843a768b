"""IVR policy ``attention``: the most relevant tokens (FastV-style)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from halfv.interfaces import IVRPolicy
from halfv.ops.selection import topk_indices

__all__ = ["AttentionPolicy"]


class AttentionPolicy(IVRPolicy):
    """FastV-style selection: the ``keep`` most relevant tokens.

    Ties in relevance go to the lower index (:func:`halfv.ops.selection.topk_indices`).
    """

    name: ClassVar[str] = "attention"
    needs_scores: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return topk_indices(scores, keep)
