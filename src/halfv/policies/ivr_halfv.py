"""IVR policy ``halfv``: relevance anchors, then farthest-point coverage (method §4B)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from halfv.interfaces import IVRPolicy
from halfv.ops.selection import halfv_select
from halfv.policies.base import require_features

__all__ = ["HalfVPolicy"]


class HalfVPolicy(IVRPolicy):
    """HalfV's unified pruner: relevance anchors, then farthest-point coverage.

    ``floor(keep * attention_share)`` tokens (see :func:`halfv.ops.selection.anchor_count`) are
    the most relevant ones; the rest of the budget is filled greedily with the token
    farthest, in cosine distance, from everything chosen so far (method §4B). With
    ``attention_share = 0`` this is :class:`DiversityPolicy`; with 1 it is
    :class:`AttentionPolicy`.

    ``grid_share`` (halfv's addition, default 0) seeds the coverage step with an even stride
    of ``floor(keep * grid_share)`` tokens as well (:func:`halfv.ops.selection.grid_seeds`), so
    farthest-point sampling adds only what the stride missed instead of over-sampling rare
    content (``docs/policies.md``, "Grid seeds").

    Attributes:
        attention_share: share of the budget taken by relevance anchors, in ``[0, 1]``.
        grid_share: share of the budget seeded by an even stride, in ``[0, 1]``.
    """

    name: ClassVar[str] = "halfv"
    needs_scores: ClassVar[bool] = True
    needs_features: ClassVar[bool] = True

    attention_share: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Share of the budget filled by top-relevance anchors, in [0, 1].",
    )

    grid_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of the budget seeded by an even stride over the span before the coverage "
            "step, in [0, 1]; 0 is the published method."
        ),
    )

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        features = require_features(self, features)
        return halfv_select(scores, features, keep, self.attention_share, self.grid_share)
