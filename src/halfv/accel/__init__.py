"""Opt-in speed-ups outside the pruning schedule: they change how a model computes, not what.

:func:`fast_vision` runs the windowed attention of Qwen2.5-VL's vision tower with one
attention call per layer instead of one per window (transformers' path when flash-attn is
not installed). It is a removable handle, like :func:`halfv.apply`::

    with halfv.accel.fast_vision(model) as fast, halfv.apply(model):
        model.generate(**inputs, max_new_tokens=32)
    print(fast.backends_used)  # {'varlen'} on a CUDA GPU with torch >= 2.11
"""

from __future__ import annotations

from halfv.accel.qwen_vision import (
    BACKENDS,
    FastVisionHandle,
    fast_vision,
    padded_window_attention,
    varlen_available,
)

__all__ = [
    "BACKENDS",
    "FastVisionHandle",
    "fast_vision",
    "padded_window_attention",
    "varlen_available",
]
