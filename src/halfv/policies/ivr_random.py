"""IVR policy ``random``: a seeded uniform sample, a baseline."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from halfv.interfaces import IVRPolicy
from halfv.ops.selection import random_indices

__all__ = ["RandomPolicy"]


class RandomPolicy(IVRPolicy):
    """Seeded random baseline: ``keep`` tokens drawn uniformly without replacement.

    The sample depends only on ``(seed, N, keep)``: a fresh CPU generator seeded with
    ``seed`` is used on every call, and every row of a batch gets the same indices, so
    row ``b`` of a batch equals selecting that row alone, and repeated calls agree. For a
    fixed ``(seed, N)`` a smaller ``keep`` keeps a subset of a larger one.

    Attributes:
        seed: seed of the generator, ``>= 0``.
    """

    name: ClassVar[str] = "random"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    seed: int = Field(0, ge=0, strict=True, description="Seed of the random generator (>= 0).")

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        batch, n = scores.shape
        generator = torch.Generator().manual_seed(self.seed)
        row = random_indices(1, n, keep, generator, device=scores.device)
        return row.expand(batch, keep)
