"""Built-in IVR (shallow-layer) selection policies.

Each policy is a frozen pydantic model (``extra="forbid"``): its fields are the options
``halfv.get_ivr_policy(name, **options)`` accepts, validated at construction. Each
implements only ``_choose``; :meth:`halfv.IVRPolicy.select` validates the inputs, handles
1-D input, returns ``arange(N)`` when ``keep == N`` and sorts the result.

=============  ======================================  ============  ==============
name           rule                                    needs_scores  needs_features
=============  ======================================  ============  ==============
``halfv``      anchors by relevance + cosine FPS       yes           yes
``attention``  top-k relevance (FastV-style)           yes           no
``diversity``  cosine FPS from index 0 (DivPrune)      no            yes
``random``     seeded uniform sample                   no            no
``uniform``    evenly strided spatial downsample       no            no
=============  ======================================  ============  ==============

Policies with ``needs_scores = False`` still receive a ``[B, N]`` ``scores`` tensor (any
values, e.g. zeros): :meth:`~halfv.IVRPolicy.select` reads the batch size, the token count
and the device from it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from halfv.errors import HalfvValueError
from halfv.interfaces import IVRPolicy
from halfv.ops.selection import (
    farthest_point_sampling,
    halfv_select,
    random_indices,
    topk_indices,
    uniform_indices,
)

__all__ = [
    "AttentionPolicy",
    "DiversityPolicy",
    "HalfVPolicy",
    "RandomPolicy",
    "UniformPolicy",
]


def _features(policy: IVRPolicy, features: Tensor | None) -> Tensor:
    if features is None:  # select() already refuses this; kept for the type checker
        msg = f"policy {policy.name!r} needs features; pass a [B, N, D] tensor"
        raise HalfvValueError(msg)
    return features


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
        features = _features(self, features)
        return halfv_select(scores, features, keep, self.attention_share, self.grid_share)


class AttentionPolicy(IVRPolicy):
    """FastV-style selection: the ``keep`` most relevant tokens.

    Ties in relevance go to the lower index (:func:`halfv.ops.selection.topk_indices`).
    """

    name: ClassVar[str] = "attention"
    needs_scores: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return topk_indices(scores, keep)


class DiversityPolicy(IVRPolicy):
    """DivPrune-style selection: greedy max-min cosine coverage from an empty seed.

    :func:`halfv.ops.selection.farthest_point_sampling` without seeds: every distance starts at
    2.0, so the first pick is index 0, then the farthest token from the chosen set each step.
    """

    name: ClassVar[str] = "diversity"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = True

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return farthest_point_sampling(_features(self, features), keep)


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
