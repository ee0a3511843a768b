"""Decode-step masks of pruned layers, from each layer's own cache (pure tensor maths).

transformers builds one decode mask per layer *type* and sizes it for the first layer of
that type (``masking_utils``: ``cache.is_sliding.index(True)`` for sliding layers, layer 0
otherwise). A pruned layer's cache holds other entries: its stage's ``S`` slots instead of
the ``T`` prompt positions, and a sliding layer (``DynamicSlidingWindowLayer``) only the
last ``window - 1`` entries it was given. So the mask of a pruned layer is built here from
the *original* positions of the entries its cache returns for this step:

* the entries it still holds, the last ``kept`` of ``[stage slots..., generated tokens...]``
  (``kept`` is all of them for a full-attention layer), then the step's new tokens;
* a key is visible when it is a real slot (not a ragged batch's dummy), not padding, not
  after the query, and, in a sliding layer, fewer than ``window`` positions before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from halfv.runtime.layout import StageLayout, allowed_to_mask

__all__ = ["CacheWindow", "cache_window", "layer_decode_mask"]


@dataclass(frozen=True)
class CacheWindow:
    """What one layer's cache holds before a decode step's update.

    Attributes:
        seen: entries the layer was ever given (its stage's slots plus generated tokens).
        kept: entries it still holds (the last ``kept`` of ``seen``).
        window: the layer's sliding window, ``None`` for full attention.
    """

    seen: int
    kept: int
    window: int | None


def cache_window(cache: Any, layer_idx: int, window: int | None) -> CacheWindow:
    """The :class:`CacheWindow` of cache layer ``layer_idx`` (host ints: no device sync).

    A ``DynamicSlidingWindowLayer`` counts what it was given in ``cumulative_length`` and
    returns its last ``sliding_window - 1`` entries plus the new ones; a ``DynamicLayer``
    returns everything it holds.
    """
    layer = cache.layers[layer_idx]
    if getattr(layer, "is_sliding", False) and hasattr(layer, "cumulative_length"):
        seen = int(layer.cumulative_length)
        size = int(layer.sliding_window)
        return CacheWindow(seen, min(size - 1, seen), window or size)
    seen = int(layer.get_seq_length())
    return CacheWindow(seen, seen, window)


def layer_decode_mask(
    held: CacheWindow,
    layout: StageLayout,
    prompt_len: int,
    query_len: int,
    *,
    prompt_keys: Tensor | None,
    step_keys: Tensor | None,
    like: Tensor | None,
) -> Tensor:
    """``[B, 1, q, kept + q]`` mask of one pruned layer for a decode step.

    Args:
        held: the layer's cache before the step's update.
        layout: the layer's stage layout (``S`` slots at original positions).
        prompt_len: ``T``.
        query_len: ``q``, the step's new tokens.
        prompt_keys: ``[B, T]`` bool, False on the prompt's padding (``None``: none).
        step_keys: the step call's 2-D mask ``[B, T + generated + q]``, if it passed one
            of that length (padding among generated tokens), else ``None``.
        like: the mask transformers built (its style is kept: bool or additive float).
    """
    s, t = layout.length, prompt_len
    device = layout.orig_pos.device
    b = layout.orig_pos.shape[0]
    index = torch.arange(held.seen - held.kept, held.seen + query_len, device=device)
    in_stage = index < s
    slot = index.clamp(max=s - 1).expand(b, -1)
    key_pos = torch.where(in_stage, layout.orig_pos.gather(1, slot), t + index - s)
    key_ok = torch.where(in_stage, layout.valid.gather(1, slot), True)
    if prompt_keys is not None:
        prompt = prompt_keys.to(device).bool().gather(1, key_pos.clamp(max=t - 1))
        key_ok = key_ok & (prompt | ~in_stage)
    if step_keys is not None:
        key_ok = key_ok & step_keys.to(device).bool().gather(1, key_pos)
    query_pos = t + held.seen - s + torch.arange(query_len, device=device)
    distance = query_pos[None, :, None] - key_pos[:, None, :]  # [B, q, K]
    allowed = (distance >= 0) & key_ok[:, None, :]
    if held.window is not None:
        allowed = allowed & (distance < held.window)
    return allowed_to_mask(allowed[:, None], like, torch.bool)
