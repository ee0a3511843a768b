"""The SDPA backends a pruned decode step runs on.

PyTorch's cuDNN attention backend builds one execution graph per distinct set of input
shapes and strides, and caches it (``aten/src/ATen/native/cudnn/MHA.cpp``, keyed on the
KV length among others). In decode the KV length grows by one every step, so every step
misses that cache: an unpruned model builds one graph per step, and a pruned one, whose
layers hold a cache of two or three lengths (before IVR, after IVR, after an SSR prune),
builds two or three. On an H100 that host work made halfv's decode slower per token than
the unpruned model's (``docs/speed.md``).

So, while a pruned model decodes on CUDA, halfv turns the cuDNN backend off for the step
and lets SDPA choose among the other backends the user has enabled (flash or memory-
efficient attention, which need no per-shape setup). Nothing changes when cuDNN is off
already, when neither flash nor memory-efficient attention is enabled, for prefills, or
when no stage shortened the cache (keep ratio 1.0: the model must stay exact).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["decode_backends_without_cudnn"]


def decode_backends_without_cudnn(device: torch.device) -> AbstractContextManager[None] | None:
    """A context that runs SDPA on the enabled backends other than cuDNN, or ``None``
    where that changes nothing (not CUDA, cuDNN off) or leaves no fast backend (see the
    module docstring)."""
    if device.type != "cuda":
        return None
    cuda: Any = torch.backends.cuda  # its *_sdp_enabled() functions are unannotated
    if not cuda.cudnn_sdp_enabled():
        return None
    enabled: dict[SDPBackend, bool] = {
        SDPBackend.FLASH_ATTENTION: cuda.flash_sdp_enabled(),
        SDPBackend.EFFICIENT_ATTENTION: cuda.mem_efficient_sdp_enabled(),
        SDPBackend.MATH: cuda.math_sdp_enabled(),
    }
    if not (enabled[SDPBackend.FLASH_ATTENTION] or enabled[SDPBackend.EFFICIENT_ATTENTION]):
        return None
    return sdpa_kernel([backend for backend, on in enabled.items() if on])
