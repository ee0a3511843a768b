"""IVR policy ``uniform``: an evenly strided spatial downsample, a baseline."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from halfv.interfaces import IVRPolicy
from halfv.ops.selection import uniform_indices

__all__ = ["UniformPolicy"]


class UniformPolicy(IVRPolicy):
    """Spatial-stride baseline: ``keep`` evenly spaced tokens of the flattened span.

    Index ``i`` is ``floor((2i + 1) * N / (2 * keep))``, the centre of the ``i``-th of ``keep``
    equal slices (:func:`halfv.ops.selection.uniform_indices`).
    """

    name: ClassVar[str] = "uniform"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        batch, n = scores.shape
        return uniform_indices(n, keep, device=scores.device).expand(batch, keep)
