"""Brute-force reference selections that the selection and policy tests compare against.

Plain Python and float64 numpy, one candidate at a time: slow, obviously right.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor


def ref_topk(scores: Tensor, k: int) -> list[int]:
    """Top-k of one row by (score descending, index ascending)."""
    values = scores.tolist()
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


def unit64(features: Tensor) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Rows of ``features`` scaled to unit length, in float64."""
    x = features.to(torch.float64).numpy()
    norms = np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return np.asarray(x / norms, dtype=np.float64)


def ref_min_dist(unit: np.ndarray[Any, np.dtype[np.float64]], u: int, chosen: list[int]) -> float:
    """Cosine distance from token ``u`` to its nearest chosen token (2.0 if none chosen)."""
    if not chosen:
        return 2.0
    return min(1.0 - float(unit[u] @ unit[v]) for v in chosen)


def ref_fps(features: Tensor, k: int, seeds: list[int]) -> list[int]:
    """Greedy k-center of one row ``[N, D]``, in float64, one candidate at a time."""
    unit = unit64(features)
    chosen = list(seeds)
    while len(chosen) < k:
        best, best_dist = -1, -math.inf
        for u in range(unit.shape[0]):
            if u in chosen:
                continue
            dist = ref_min_dist(unit, u, chosen)
            if dist > best_dist:  # strict: the lowest index wins ties
                best, best_dist = u, dist
        chosen.append(best)
    return chosen
