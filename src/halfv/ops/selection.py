"""Token-selection maths of HalfV: pure tensor functions, batched, device-resident.

Nothing here knows about models. Every function takes ``[B, N]`` scores or ``[B, N, D]``
features, works on the device of its input and returns int64 indices on that device.

Tie-breaking is deterministic everywhere:

* :func:`topk_indices` sorts with ``torch.sort(descending=True, stable=True)``: among equal
  scores the lower index ranks first.
* :func:`farthest_point_sampling` picks ``torch.argmax`` of the distance vector; PyTorch
  documents that ``argmax`` returns the *first* maximal index, so ties go to the lower index.

Host synchronisation: :func:`topk_indices`, :func:`halfv_select`, :func:`uniform_indices` and
:func:`farthest_point_sampling` without seeds never read a tensor value on the host.
:func:`farthest_point_sampling` with a ``seed_mask`` reads the per-row seed counts once
(one synchronisation per call, none per selected token), because the count decides the
number of loop iterations.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import Tensor

from halfv.errors import HalfvTypeError, HalfvValueError
from halfv.ops.fps_kernel import greedy_on_gram
from halfv.ops.strides import check_count as _check_count
from halfv.ops.strides import grid_seeds, random_indices, uniform_indices

__all__ = [
    "anchor_count",
    "farthest_point_sampling",
    "grid_seeds",
    "halfv_select",
    "random_indices",
    "topk_indices",
    "uniform_indices",
]

#: slack that absorbs binary rounding in ``keep * share`` (the same rule as halfv.ops.budget)
_ROUNDING_SLACK = 1e-9
#: L2-normalisation floor: a zero feature vector stays zero (cosine 0 to everything)
_NORM_EPS = 1e-12
#: seeds processed per matmul when initialising FPS distances (bounds memory to [B, N, 1024])
_SEED_CHUNK = 1024


def _check_scores(scores: Tensor) -> None:
    if scores.dim() != 2 or scores.shape[1] < 1:
        msg = f"scores must have shape [B, N] with N >= 1, got {tuple(scores.shape)}"
        raise HalfvValueError(msg)


def _check_features(features: Tensor) -> None:
    if features.dim() != 3 or features.shape[1] < 1 or features.shape[2] < 1:
        msg = (
            f"features must have shape [B, N, D] with N, D >= 1, got {tuple(features.shape)}; "
            "add a batch axis with features.unsqueeze(0)"
        )
        raise HalfvValueError(msg)
    if not features.is_floating_point():
        msg = f"features must be a floating-point tensor, got dtype {features.dtype}"
        raise HalfvTypeError(msg)


def anchor_count(keep: int, attention_share: float) -> int:
    """Number of relevance anchors HalfV takes out of a budget of ``keep`` tokens.

    ``floor(keep * attention_share)``, with the same ``1e-9`` rounding slack as
    :func:`halfv.ops.budget.kept_count`, so ``anchor_count(100, 0.29) == 29`` (upstream's plain
    ``int(100 * 0.29)`` gives 28). Never more than ``keep``; 0 is allowed.

    Args:
        keep: total budget, ``keep >= 0``.
        attention_share: share of the budget given to anchors, in ``[0, 1]``.

    Returns:
        The anchor count in ``[0, keep]``.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        msg = f"keep={keep!r} must be a non-negative int"
        raise HalfvValueError(msg)
    if not 0.0 <= attention_share <= 1.0:
        msg = f"attention_share={attention_share!r} must be in [0, 1]"
        raise HalfvValueError(msg)
    return min(keep, math.floor(keep * attention_share + _ROUNDING_SLACK))


def topk_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores per row, highest first.

    Ties are broken toward the lower index: the scores are sorted with
    ``torch.sort(descending=True, stable=True)``, which keeps equal elements in their
    original (ascending-index) order. ``torch.topk`` is not used because it does not
    guarantee any order among ties. NaN ranks above every number (``torch.sort``'s order);
    scores are not checked for NaN, to avoid a host synchronisation.

    Args:
        scores: ``[B, N]`` relevance scores.
        k: how many to return, ``1 <= k <= N``.

    Returns:
        ``[B, k]`` int64 indices, in decreasing score order (not sorted by index).

    Complexity: one ``O(B N log N)`` sort.
    """
    _check_scores(scores)
    _check_count("k", k, 1, scores.shape[1], "ask for at most N indices")
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[:, :k]


#: Largest ``B * N * N`` for which FPS precomputes the Gram matrix (1 GiB in float32).
_GRAM_LIMIT = 1 << 28


def _gram(unit: Tensor) -> Tensor:
    """``unit @ unit^T`` in float32; on CUDA with TF32 inputs (the features are bf16-exact)."""
    if not unit.is_cuda:
        return torch.bmm(unit, unit.transpose(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers another TF32 switch
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return torch.bmm(unit, unit.transpose(1, 2))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous


@functools.cache
def bmm_out_dtype_works(device_type: str) -> bool:
    """Whether ``torch.bmm(..., out_dtype=torch.float32)`` runs on this device type."""
    try:
        x = torch.ones((1, 2, 2), dtype=torch.bfloat16, device=device_type)
        torch.bmm(x, x, out_dtype=torch.float32)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True


def _raw_gram(features: Tensor) -> tuple[Tensor, Tensor] | None:
    """Inner products of half-precision CUDA features, exactly multiplied, float32 sums.

    Returns ``(gram, inverse_norms)`` with ``cos(i, j) = gram[i, j] * inv[i] * inv[j]``, or
    ``None`` where this path does not apply (not CUDA, not bf16/fp16, or a torch without
    ``bmm(out_dtype=...)``): then the caller normalises first and uses :func:`_gram`.
    """
    half = features.dtype in (torch.bfloat16, torch.float16)
    if not (features.is_cuda and half and bmm_out_dtype_works(features.device.type)):
        return None
    gram = torch.bmm(features, features.transpose(1, 2), out_dtype=torch.float32)
    # the diagonal holds the squared norms, summed like every other entry: no float32
    # copy of the [B, N, D] features and no separate norm pass
    norms = gram.diagonal(dim1=1, dim2=2).sqrt()
    return gram, norms.clamp_min(_NORM_EPS).reciprocal()


def _unit_features(features: Tensor) -> Tensor:
    """Upcast to at least float32 and L2-normalise the last axis (eps-safe)."""
    dtype = torch.promote_types(features.dtype, torch.float32)
    return torch.nn.functional.normalize(features.to(dtype), p=2.0, dim=-1, eps=_NORM_EPS)


def _initial_distances(
    shape: tuple[int, int], like: Tensor, seeds: Tensor | None, seed_sims: Tensor | None
) -> Tensor:
    """``min_dist`` before the first new pick: 2.0 without seeds (the largest cosine
    distance, so the first pick is index 0, the upstream convention), else the distance
    to the nearest seed (``seed_sims`` holds each token's largest similarity to a seed),
    with the seeds themselves at ``-inf``. Dtype and device are those of ``like``."""
    if seeds is None or seed_sims is None:
        return torch.full(shape, 2.0, dtype=like.dtype, device=like.device)
    # NaN (non-finite features) counts as the largest distance; picks stay distinct.
    min_dist = torch.nan_to_num(1.0 - seed_sims.to(like.dtype), nan=2.0)
    return min_dist.scatter_(1, seeds, float("-inf"))


def _fps_on_gram(features: Tensor, k: int, seeds: Tensor | None) -> Tensor:
    """FPS through a precomputed Gram matrix; on CUDA the loop is one fused kernel."""
    gram, scale, min_dist, out = _gram_loop_inputs(features, k, seeds)
    n_seeds = 0 if seeds is None else seeds.shape[1]
    return greedy_on_gram(gram, min_dist, out, n_seeds, scale=scale)


def _gram_loop_inputs(
    features: Tensor, k: int, seeds: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """What the greedy loop starts from: ``(gram, scale, min_dist, out)``, with the seeds
    already in ``out`` and their distances in ``min_dist`` (see :mod:`halfv.ops.fps_kernel`)."""
    b, n, _ = features.shape
    n_seeds = 0 if seeds is None else seeds.shape[1]
    raw = _raw_gram(features)
    if raw is not None:
        gram, scale = raw
    else:
        gram, scale = _gram(_unit_features(features)), None
    seed_sims = None
    if seeds is not None:
        rows = torch.gather(gram, 1, seeds.unsqueeze(-1).expand(-1, -1, n))  # [B, S, N]
        if scale is not None:
            rows = rows * torch.gather(scale, 1, seeds).unsqueeze(-1) * scale.unsqueeze(1)
        seed_sims = rows.amax(dim=1)
    min_dist = _initial_distances((b, n), gram, seeds, seed_sims)
    out = torch.empty((b, k), dtype=torch.long, device=features.device)
    if seeds is not None:
        out[:, :n_seeds] = seeds
    return gram, scale, min_dist, out


def _fps_from_seeds(features: Tensor, k: int, seeds: Tensor | None) -> Tensor:
    """Greedy k-center under cosine distance, seeded with ``seeds`` ``[B, S]`` (distinct).

    Returns ``[B, k]``: the seeds in the order given, then the new picks in pick order.
    """
    b, n, _ = features.shape
    if seeds is not None and seeds.shape[1] == 0:
        seeds = None
    if seeds is not None and seeds.shape[1] == k:
        return seeds
    if b * n * n <= _GRAM_LIMIT:
        # One GEMM up front; each pick then reads one row of the Gram matrix (N values)
        # instead of the whole [N, D] feature matrix, and on CUDA the whole greedy loop
        # runs as one fused kernel (halfv.ops.fps_kernel) instead of ~5 launches per pick.
        return _fps_on_gram(features, k, seeds)
    unit = _unit_features(features)
    seed_sims = None
    if seeds is not None:
        seed_sims = torch.full((b, n), float("-inf"), dtype=unit.dtype, device=unit.device)
        for start in range(0, seeds.shape[1], _SEED_CHUNK):
            chunk = seeds[:, start : start + _SEED_CHUNK]
            seed_vecs = torch.gather(unit, 1, chunk.unsqueeze(-1).expand(-1, -1, unit.shape[2]))
            sims = torch.bmm(unit, seed_vecs.transpose(1, 2))  # [B, N, chunk]
            seed_sims = torch.fmax(seed_sims, sims.amax(dim=-1))
    min_dist = _initial_distances((b, n), unit, seeds, seed_sims)
    picks: list[Tensor] = [] if seeds is None else [seeds]
    ones = torch.ones((b, n, 1), dtype=unit.dtype, device=unit.device)
    index_shape = (b, 1, unit.shape[2])
    for _ in range(k - (0 if seeds is None else seeds.shape[1])):
        chosen = min_dist.argmax(dim=-1, keepdim=True)  # [B, 1]; first maximum on ties
        picks.append(chosen)
        vec = torch.gather(unit, 1, chosen.unsqueeze(-1).expand(index_shape))  # [B, 1, D]
        # dist = 1 - <u, chosen>, fused into one batched matvec: beta * ones - unit @ vec^T
        dist = torch.baddbmm(ones, unit, vec.view(b, -1, 1), alpha=-1.0).squeeze(-1)
        # fmin ignores NaN, so a taken token (-inf) can never come back
        torch.fmin(min_dist, dist, out=min_dist)
        min_dist.scatter_(1, chosen, float("-inf"))
    return torch.cat(picks, dim=1)


def farthest_point_sampling(features: Tensor, k: int, seed_mask: Tensor | None = None) -> Tensor:
    """Greedy farthest-point sampling (k-center) under cosine distance.

    The features are upcast to at least float32 and L2-normalised per token (a zero vector
    stays zero, at cosine distance 1 from everything). The distance is ``1 - cos``; on unit
    vectors it orders pairs exactly like the Euclidean distance. ``min_dist[u]`` holds the
    distance from token ``u`` to the nearest chosen token; each step picks
    ``argmax(min_dist)`` (first maximum, so ties go to the lower index), then lowers
    ``min_dist`` with the new token's distances; chosen tokens are set to ``-inf`` and are
    never picked again.

    Seeds count toward ``k``: they are the first picks, and ``k - n_seeds`` new tokens are
    added. Without seeds every distance starts at 2.0, so the first pick is index 0 (the
    upstream convention).

    Args:
        features: ``[B, N, D]`` floating-point token features.
        k: number of tokens to return, ``1 <= k <= N``.
        seed_mask: optional ``[B, N]`` bool mask of pre-selected tokens; every row must have
            the same number of seeds, at most ``k``.

    Returns:
        ``[B, k]`` int64 indices: the seeds in ascending index order, then the new picks in
        the order they were chosen.

    Complexity: when ``B * N * N <= 2**28`` one ``O(B N^2 D)`` Gram GEMM, then ``O(B N)``
    per pick (a row read, a min, an argmax); above that, one batched ``O(B N D)`` matvec per
    pick. No host synchronisation inside the loop either way.
    """
    _check_features(features)
    b, n, _ = features.shape
    _check_count("k", k, 1, n, f"ask for between 1 and N={n} tokens")
    seeds: Tensor | None = None
    if seed_mask is not None:
        if seed_mask.dtype != torch.bool or seed_mask.shape != (b, n):
            msg = (
                f"seed_mask must be a bool tensor of shape {(b, n)}, got dtype "
                f"{seed_mask.dtype} and shape {tuple(seed_mask.shape)}"
            )
            raise HalfvValueError(msg)
        counts = seed_mask.to(device=features.device).sum(dim=1)
        low, high = (int(v) for v in torch.stack(torch.aminmax(counts)).tolist())
        if low != high or high > k:
            msg = (
                f"seed_mask must mark the same number of seeds in every row, at most k={k}; "
                f"got between {low} and {high} seeds per row"
            )
            raise HalfvValueError(msg)
        if high > 0:
            # a stable descending sort of the mask lists each row's seeds in index order
            order = torch.sort(seed_mask.to(torch.uint8), dim=1, descending=True, stable=True)
            seeds = order.indices[:, :high].to(features.device)
    return _fps_from_seeds(features, k, seeds)


def halfv_select(
    scores: Tensor,
    features: Tensor,
    keep: int,
    attention_share: float,
    grid_share: float = 0.0,
) -> Tensor:
    """HalfV's unified IVR selection: relevance anchors, then diversity coverage.

    ``K_attn = anchor_count(keep, attention_share)`` anchors are the top-relevance tokens
    (:func:`topk_indices`); the remaining ``keep - K_attn`` tokens are chosen by
    :func:`farthest_point_sampling` seeded with the anchors (method §4B). With no anchors the
    distances start at 2.0 everywhere, so the first pick is index 0, as upstream. With
    ``K_attn == keep`` the result is plain top-k.

    ``grid_share > 0`` is halfv's addition (``docs/policies.md``, "Grid seeds"):
    ``anchor_count(keep, grid_share)`` evenly strided non-anchor tokens
    (:func:`grid_seeds`) join the anchors as seeds, so the coverage step only adds what
    the stride missed. Pure farthest-point coverage over-samples rare content (on the zoo's
    LLaVA, shape tokens are 10 % of an image but 27 % of the kept set) and shifts the
    mixture the language model reads; the grid keeps most of the kept set in proportion.
    Anchors and grid together never exceed ``keep`` (the grid shrinks to fit).

    Args:
        scores: ``[B, N]`` relevance scores.
        features: ``[B, N, D]`` features (final-normed hidden states; normalised here).
        keep: total number of tokens to keep, ``1 <= keep <= N``.
        attention_share: share of ``keep`` taken by anchors, in ``[0, 1]``.
        grid_share: share of ``keep`` seeded by an even stride, in ``[0, 1]``; 0 (the
            default) is the method as published.

    Returns:
        ``[B, keep]`` int64 indices: anchors in decreasing relevance, then the grid seeds in
        index order, then coverage picks in pick order. No host synchronisation.
    """
    _check_scores(scores)
    _check_features(features)
    if features.shape[:2] != scores.shape:
        msg = (
            f"features {tuple(features.shape)} must have the [B, N] of scores {tuple(scores.shape)}"
        )
        raise HalfvValueError(msg)
    n = scores.shape[1]
    _check_count("keep", keep, 1, n, "use halfv.ops.budget.kept_count(N, ratio)")
    n_anchors = anchor_count(keep, attention_share)
    anchors = topk_indices(scores, n_anchors).to(features.device) if n_anchors else None
    n_grid = min(anchor_count(keep, grid_share), keep - n_anchors)
    if n_grid == 0:
        return _fps_from_seeds(features, keep, anchors)
    taken = torch.zeros(scores.shape, dtype=torch.bool, device=features.device)
    if anchors is not None:
        taken.scatter_(1, anchors, True)
    grid = grid_seeds(taken, n_anchors, n_grid)
    seeds = grid if anchors is None else torch.cat([anchors, grid], dim=1)
    return _fps_from_seeds(features, keep, seeds)
