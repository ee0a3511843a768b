"""Farthest-point sampling on a precomputed Gram matrix: one fused GPU kernel.

The greedy loop of FPS is sequential: pick ``argmax(min_dist)``, read that token's row of
cosine similarities, lower ``min_dist``, repeat. Issued from Python as ~5 tensor ops per
pick, it is bound by launch latency (the first H100 run spent 55 ms on 1024 picks out of
4096 tokens; see ``benchmarks/results/speed-h100-v1.log``). The Triton kernels of
:mod:`halfv.ops._fps_triton` run the whole loop in one launch, one program per sample, with
``min_dist`` held in registers: a step costs one block-wide reduction and one row read.
(An opt-in two-candidate step makes up to two exact picks per step; see
:func:`greedy_on_gram_triton`.)

Both :func:`greedy_on_gram_torch` (any device, the reference) and
:func:`greedy_on_gram_triton` (CUDA + Triton) take the same Gram matrix and return the
same picks: ties go to the lowest index, and a token's own ``-inf`` never comes back.

The Gram matrix holds either cosine similarities or raw inner products together with
``scale``, the inverse norms: ``cos(i, j) = gram[i, j] * scale[i] * scale[j]``. The second
form lets bf16 features go through a bf16 GEMM with float32 output (exact products, float32
sums: faster than TF32 and no rounding of the inputs) without a pass that rewrites the
``N x N`` matrix; the kernel applies the scales as it reads each row.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = [
    "default_num_warps",
    "greedy_on_gram",
    "greedy_on_gram_torch",
    "greedy_on_gram_triton",
    "triton_available",
]

#: Largest span the fused kernel keeps in registers (one program per sample).
MAX_KERNEL_TOKENS = 32768


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def greedy_on_gram_torch(
    gram: Tensor, min_dist: Tensor, out: Tensor, start: int, scale: Tensor | None = None
) -> Tensor:
    """Fill ``out[:, start:]`` with greedy picks (reference loop, any device).

    Args:
        gram: ``[B, N, N]`` float32 cosine similarities, or inner products with ``scale``.
        min_dist: ``[B, N]`` current distance to the chosen set; chosen tokens are ``-inf``.
            Updated in place.
        out: ``[B, k]`` int64; columns ``< start`` hold the picks made so far.
        start: number of picks already made.
        scale: optional ``[B, N]`` float32 inverse norms; the similarity of ``i`` and ``j``
            is then ``gram[i, j] * scale[i] * scale[j]``.
    """
    b, n = min_dist.shape
    row_shape = (b, 1, n)
    for i in range(start, out.shape[1]):
        chosen = min_dist.argmax(dim=-1, keepdim=True)  # first maximum on ties
        out[:, i : i + 1] = chosen
        row = torch.gather(gram, 1, chosen.unsqueeze(-1).expand(row_shape)).squeeze(1)
        if scale is not None:
            row = row * torch.gather(scale, 1, chosen) * scale
        torch.fmin(min_dist, 1.0 - row, out=min_dist)  # fmin: NaN never replaces a distance
        min_dist.scatter_(1, chosen, float("-inf"))
    return out


def default_num_warps(n: int) -> int:
    """Warps of the fused kernel for ``n`` tokens: 8 distances per thread, 4 to 32 warps.

    The row read of each pick is the critical path; more threads keep more of it in
    flight. On an H100 (``benchmarks/bench_selection.py --sweep-warps``, D = 3584) the
    loop for 4096 of 16384 tokens took 125, 61, 32, 19 and 13 ms at 2, 4, 8, 16 and 32
    warps, and 1024 of 4096 tokens 4.1, 2.3, 1.4, 1.1 and 1.2 ms.
    """
    block = 1 << max(0, (n - 1).bit_length())
    return min(32, max(4, block // 256))


def greedy_on_gram_triton(
    gram: Tensor,
    min_dist: Tensor,
    out: Tensor,
    start: int,
    scale: Tensor | None = None,
    *,
    num_warps: int | None = None,
    speculate: bool = False,
) -> Tensor:
    """Same contract as :func:`greedy_on_gram_torch`, in one fused CUDA launch.

    ``num_warps`` overrides :func:`default_num_warps` (for tuning). ``speculate=True``
    takes up to two picks per step (same picks). It is not the default: on an H100 it was
    slower at every size measured (``benchmarks/results/selection-h100-v9-merged-kernel.log``:
    1.29 against 1.11 ms for 922 picks of 4096 tokens, 11.9 against 10.7 ms for 3687 of
    16384), because one SM reads the second row no faster than it would read it in the
    next step. It is kept, tested, for a loop spread over several SMs, where one saved
    step would also save a grid-wide exchange.
    """
    import triton

    from halfv.ops import _fps_triton

    b, n = min_dist.shape
    gram = gram.contiguous()
    dist = min_dist.contiguous()
    scale_arg = dist if scale is None else scale.contiguous()
    args = (
        gram,
        dist,
        out,
        scale_arg,
        n,
        out.shape[1],
        start,
        gram.stride(0),
        gram.stride(1),
        dist.stride(0),
        out.stride(0),
        scale_arg.stride(0),
    )
    _fps_triton.launch(
        (b,),
        args,
        block=triton.next_power_of_2(n),
        has_scale=scale is not None,
        speculate=speculate,
        num_warps=num_warps or default_num_warps(n),
    )
    return out


def greedy_on_gram(
    gram: Tensor, min_dist: Tensor, out: Tensor, start: int, scale: Tensor | None = None
) -> Tensor:
    """Dispatch: the fused kernel on CUDA when Triton is there, else the torch loop."""
    fused = (
        gram.is_cuda
        and min_dist.shape[1] <= MAX_KERNEL_TOKENS
        and out.shape[1] > start
        and triton_available()
    )
    if fused:
        return greedy_on_gram_triton(gram, min_dist, out, start, scale)
    return greedy_on_gram_torch(gram, min_dist, out, start, scale)
