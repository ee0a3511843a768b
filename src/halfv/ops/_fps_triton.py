"""The Triton kernel of the greedy FPS loop (imported only where Triton is installed).

:func:`fps_kernel` has the contract of :mod:`halfv.ops.fps_kernel`: one program per sample
holds ``min_dist`` in registers and makes the picks ``start .. k-1``. Its constexpr
``SPECULATE`` chooses between two steps with the same result:

* one pick per step: a block-wide argmax, then the chosen token's row of the Gram matrix
  is read and lowers ``min_dist``;
* one *or two* picks per step. One reduction finds the two best tokens ``c1`` and ``c2``
  (value first, then the lower index, as ``argmax`` breaks ties), and both rows are read
  at once. ``c1`` is the pick. ``c2`` is the next pick exactly when ``c1``'s row leaves
  ``min_dist[c2]`` unchanged: every other token's distance was at most ``min_dist[c2]``
  and can only have fallen, and a token that still ties it has a higher index. So the
  kernel checks that one entry, ``1 - sim(c1, c2) >= min_dist[c2]``, and then takes
  ``c2`` without another reduction or another dependent read. The row read is the slow,
  latency-bound part of a step.

The kernel is compiled without fused multiply-add, so each distance is rounded exactly
like the torch reference (``1.0 - row * s_i * s_j``, operation by operation) and the
check on ``c2`` sees the bits the update writes.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

__all__ = ["fps_kernel", "launch"]


@triton.jit
def _top2_combine(v1a, i1a, v2a, i2a, v1b, i1b, v2b, i2b):  # type: ignore[no-untyped-def]  # noqa: PLR0917
    """Merge two (best, second) lists; larger value first, ties to the lower index."""
    a_first = (v1a > v1b) | ((v1a == v1b) & (i1a < i1b))
    best_v = tl.where(a_first, v1a, v1b)
    best_i = tl.where(a_first, i1a, i1b)
    other_v = tl.where(a_first, v1b, v1a)  # the other list's best
    other_i = tl.where(a_first, i1b, i1a)
    next_v = tl.where(a_first, v2a, v2b)  # the winning list's second
    next_i = tl.where(a_first, i2a, i2b)
    other_first = (other_v > next_v) | ((other_v == next_v) & (other_i < next_i))
    return (
        best_v,
        best_i,
        tl.where(other_first, other_v, next_v),
        tl.where(other_first, other_i, next_i),
    )


@triton.jit  # type: ignore[untyped-decorator]
def fps_kernel(  # type: ignore[no-untyped-def]  # noqa: PLR0917 (a kernel takes positionals)
    gram_ptr,
    dist_ptr,
    out_ptr,
    scale_ptr,
    n,
    k,
    start,
    stride_gb,
    stride_gr,
    stride_db,
    stride_ob,
    stride_sb,
    BLOCK: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    SPECULATE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    valid = offs < n
    gram_b = gram_ptr + b * stride_gb
    out_b = out_ptr + b * stride_ob
    dist = tl.load(dist_ptr + b * stride_db + offs, mask=valid, other=-float("inf"))
    if HAS_SCALE:
        scale = tl.load(scale_ptr + b * stride_sb + offs, mask=valid, other=0.0)
    no_value = tl.full([BLOCK], -float("inf"), tl.float32)
    no_index = tl.full([BLOCK], BLOCK, tl.int32)
    i = start
    while i < k:
        if SPECULATE:
            _best, c1, v2, c2 = tl.reduce((dist, offs, no_value, no_index), 0, _top2_combine)
        else:
            c1 = tl.argmax(dist, axis=0, tie_break_left=True)
        row1_ptr = gram_b + c1.to(tl.int64) * stride_gr
        row1 = tl.load(row1_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        if HAS_SCALE:
            s1 = tl.load(scale_ptr + b * stride_sb + c1)
            row1 = row1 * s1 * scale
        if SPECULATE:
            take2 = (v2 > -float("inf")) & (i + 1 < k)
            row2_ptr = gram_b + c2.to(tl.int64) * stride_gr
            row2_len = tl.where(take2, n, 0)  # no read at all when there is no runner-up
            row2 = tl.load(row2_ptr + offs, mask=offs < row2_len, other=0.0).to(tl.float32)
            sim12 = tl.load(row1_ptr + c2, mask=take2, other=0.0).to(tl.float32)
            if HAS_SCALE:
                s2 = tl.load(scale_ptr + b * stride_sb + c2, mask=take2, other=0.0)
                row2 = row2 * s2 * scale
                sim12 = sim12 * s1 * s2  # the same operations as row1 at column c2
        tl.store(out_b + i, c1.to(tl.int64))
        cand1 = 1.0 - row1
        dist = tl.where(cand1 < dist, cand1, dist)  # NaN compares false: like fmin
        dist = tl.where(offs == c1, -float("inf"), dist)
        i += 1
        if SPECULATE:  # noqa: SIM102 (a compile-time branch around a run-time one)
            # c2 is the next pick iff c1 left its distance as it was (a NaN similarity: no)
            if take2 & (1.0 - sim12 >= v2):
                tl.store(out_b + i, c2.to(tl.int64))
                cand2 = 1.0 - row2
                dist = tl.where(cand2 < dist, cand2, dist)
                dist = tl.where(offs == c2, -float("inf"), dist)
                i += 1


def launch(
    grid: tuple[int],
    args: tuple[Any, ...],
    *,
    block: int,
    has_scale: bool,
    speculate: bool,
    num_warps: int,
) -> None:
    """Launch :func:`fps_kernel` without fused multiply-add (see the module docstring)."""
    fps_kernel[grid](
        *args,
        BLOCK=block,
        HAS_SCALE=has_scale,
        SPECULATE=speculate,
        num_warps=num_warps,
        enable_fp_fusion=False,
    )
