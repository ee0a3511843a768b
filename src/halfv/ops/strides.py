"""Index rules that look at no feature: even strides, seeded random draws, grid seeds.

The ``uniform`` and ``random`` IVR baselines are built on :func:`uniform_indices` and
:func:`random_indices`; HalfV's optional grid seeds (``grid_share``) on :func:`grid_seeds`.
Integer arithmetic or CPU-seeded draws, so every result is exact and device-independent;
nothing reads a tensor value back to the host. :mod:`halfv.ops.selection` re-exports all three.
"""

from __future__ import annotations

import torch
from torch import Tensor

from halfv.errors import HalfvValueError

__all__ = ["check_count", "grid_seeds", "random_indices", "uniform_indices"]


def check_count(name: str, value: int, low: int, high: int | None, fix: str) -> None:
    """Refuse a count that is not an int in ``[low, high]``; the message ends with ``fix``."""
    in_range = isinstance(value, int) and low <= value and (high is None or value <= high)
    if isinstance(value, bool) or not in_range:
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        msg = f"{name}={value!r} must be an int {bounds}; {fix}"
        raise HalfvValueError(msg)


def uniform_indices(n: int, keep: int, device: torch.device | str | None = None) -> Tensor:
    """Evenly strided indices: ``i -> floor((2i + 1) * n / (2 * keep))`` for ``i < keep``.

    Each index is the (rounded-down) centre of one of ``keep`` equal slices of ``[0, n)``, so
    the result is strictly increasing and distinct; ``keep == n`` gives ``arange(n)``.
    Integer arithmetic, exact.

    Args:
        n: number of tokens, ``n >= 1``.
        keep: number to keep, ``1 <= keep <= n``.
        device: where to put the result.

    Returns:
        ``[keep]`` int64 indices.
    """
    check_count("n", n, 1, None, "pass the number of tokens")
    check_count("keep", keep, 1, n, "use halfv.ops.budget.kept_count(n, ratio)")
    i = torch.arange(keep, dtype=torch.int64, device=device)
    return torch.div((2 * i + 1) * n, 2 * keep, rounding_mode="floor")


def random_indices(
    batch: int,
    n: int,
    keep: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> Tensor:
    """``keep`` distinct random indices per row, reproducible from ``generator``.

    Draws ``[batch, n]`` uniform noise from ``generator`` on the CPU (so the result does not
    depend on the device) and keeps the positions of the ``keep`` smallest values. For one
    generator state, a smaller ``keep`` gives a prefix of a larger one.

    Args:
        batch: number of rows, ``batch >= 1``.
        n: number of tokens, ``n >= 1``.
        keep: number to keep, ``1 <= keep <= n``.
        generator: a CPU ``torch.Generator`` (advanced by the call).
        device: where to put the result.

    Returns:
        ``[batch, keep]`` int64 indices in random order.
    """
    check_count("batch", batch, 1, None, "pass the batch size")
    check_count("n", n, 1, None, "pass the number of tokens")
    check_count("keep", keep, 1, n, "use halfv.ops.budget.kept_count(n, ratio)")
    if generator.device.type != "cpu":
        msg = (
            f"generator must live on the CPU, got one on {generator.device}; use torch.Generator()"
        )
        raise HalfvValueError(msg)
    noise = torch.rand((batch, n), generator=generator)
    return noise.argsort(dim=-1, stable=True)[:, :keep].to(device)


def grid_seeds(anchor_mask: Tensor, n_anchors: int, count: int) -> Tensor:
    """``count`` evenly strided tokens per row among those ``anchor_mask`` leaves free.

    The free tokens of each row are ranked in index order; the tokens whose rank is in
    :func:`uniform_indices` ``(n_free, count)`` are returned. Every row has the same number
    of anchors, so every row gets exactly ``count`` distinct, non-anchor tokens, spread
    evenly over the span (a spatial stride for raster-ordered image tokens). On the device,
    no host synchronisation.

    Args:
        anchor_mask: ``[B, N]`` bool, ``n_anchors`` of them ``True`` in every row.
        n_anchors: the anchors per row (passed, so nothing is read back from the device).
        count: grid tokens per row, ``0 <= count <= N - n_anchors``.

    Returns:
        ``[B, count]`` int64 indices in increasing order.
    """
    b, n = anchor_mask.shape
    free = ~anchor_mask
    n_free = n - n_anchors
    check_count("count", count, 0, n_free, f"at most the {n_free} tokens that are not anchors")
    if count == 0:
        return torch.empty(b, 0, dtype=torch.int64, device=anchor_mask.device)
    rank = free.to(torch.int64).cumsum(dim=1) - 1
    wanted = uniform_indices(n_free, count, device=anchor_mask.device)
    on_grid = free & torch.isin(rank, wanted)
    order = torch.sort(on_grid.to(torch.uint8), dim=1, descending=True, stable=True)
    return order.indices[:, :count]
