"""IVR policy ``diversity``: cosine farthest-point sampling from index 0 (DivPrune-style)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from halfv.interfaces import IVRPolicy
from halfv.ops.selection import farthest_point_sampling
from halfv.policies.base import require_features

__all__ = ["DiversityPolicy"]


class DiversityPolicy(IVRPolicy):
    """DivPrune-style selection: greedy max-min cosine coverage from an empty seed.

    :func:`halfv.ops.selection.farthest_point_sampling` without seeds: every distance starts at
    2.0, so the first pick is index 0, then the farthest token from the chosen set each step.
    """

    name: ClassVar[str] = "diversity"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = True

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return farthest_point_sampling(require_features(self, features), keep)
