"""Decode steps after a pruned prefill: each pruned layer's mask, for its own cache.

transformers builds one decode mask per layer type, sized for the first layer of that
type; a pruned layer caches its stage's slots instead of the prompt (and a sliding layer
only its last ``window - 1`` entries), so its mask is built from the original positions of
what its cache holds (:func:`halfv.runtime.decode_masks.layer_decode_mask`). A static cache
(full-attention layers only: static sliding layers are refused when pruning) keeps the
remap of the model's own mask (:func:`halfv.runtime.layout.remap_decode_mask`), whose
layers are sized per stage. Decode is launch-bound, so the eager path builds each
stage's mask once per step and cache shape (not per layer), with no host sync; the
compiled path (inside ``torch.compile``) has no per-call state and lets the compiler
merge the repeated remaps. A stage that kept every token passes the model's masks on.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from halfv._compat import cache_from_kwargs
from halfv.errors import UnsupportedModelError
from halfv.interfaces import LayerSpec
from halfv.runtime.decode_masks import CacheWindow, cache_window, layer_decode_mask
from halfv.runtime.layout import remap_decode_mask
from halfv.runtime.plan import PrefillPlan
from halfv.runtime.stage_inputs import hidden_of
from halfv.runtime.state import CallState, PlanStore

__all__ = ["compiled_decode_layer", "decode_layer"]


def decode_layer(
    idx: int,
    call: CallState,
    plan: PrefillPlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    cache_idx: int,
    spec: LayerSpec,
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Hand a pruned layer its decode mask; O(1) Python, no tensor work on a hit.

    The mask is built by the first layer of the stage with a given cache shape (entries
    seen and held, window) and model mask object in this step; later layers reuse it.
    """
    stage = plan.stage_of[idx]
    if not stage:
        return None
    layout = plan.layouts[stage]
    if layout.length == plan.prompt_len and not layout.has_dummies:
        return None  # nothing was dropped: the caches and the model's masks agree
    mask = kwargs.get("attention_mask")
    held = None if call.static_cache else cache_window(call.cache, cache_idx, spec.window)
    if held is not None and mask is None and not layout.has_dummies:
        newest = plan.prompt_len + held.seen - layout.length + hidden_of(args, kwargs).shape[1]
        if held.window is None or newest <= held.window:
            return None  # SDPA's causal path: every held key is earlier and in the window
    key = (stage, id(mask), held)
    masks = call.decode_masks
    if key not in masks:
        call.seen_masks.append(mask)  # its id stays unique while the step runs
        hidden = hidden_of(args, kwargs)
        if held is None:
            masks[key] = _decode_mask(stage, call, plan, mask, hidden)
        elif _remappable(held, mask, plan.prompt_len + held.seen - layout.length, hidden):
            # the model's mask covers the whole prompt: a gather of its columns is cheaper
            total = plan.prompt_len + held.seen - layout.length + hidden.shape[1]
            masks[key] = remap_decode_mask(
                mask, plan.layout_on(stage, hidden.device), plan.prompt_len, hidden.shape[1], total
            )
        else:
            masks[key] = layer_decode_mask(
                held,
                plan.layout_on(stage, hidden.device),
                plan.prompt_len,
                hidden.shape[1],
                prompt_keys=plan.prompt_keys,
                step_keys=_step_keys(
                    call, plan.prompt_len + held.seen - layout.length + hidden.shape[1]
                ),
                like=mask,
            )
    remapped = masks[key]
    if remapped is None and mask is None:
        return None  # SDPA without padding or dummies: nothing to change
    kwargs["attention_mask"] = remapped
    return args, kwargs


def _remappable(held: CacheWindow, mask: Any, generated_end: int, hidden: Tensor) -> bool:
    """Whether a full-attention layer's mask is the model's mask over every position
    (prompt, generated, new), so that gathering its prompt columns gives the layer's."""
    if held.window is not None:
        return False
    return mask is None or mask.shape[-1] == generated_end + hidden.shape[1]


def _step_keys(call: CallState, length: int) -> Tensor | None:
    """The step call's 2-D mask when it covers the prompt, generated and new tokens."""
    mask = call.step_mask
    return mask if mask is not None and mask.shape[-1] == length else None


def compiled_decode_layer(
    plans: PlanStore,
    idx: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    sliding: bool = False,
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The decode path inside ``torch.compile`` (transformers compiles decode steps
    only): no per-thread state, no memo, no host reads; the plan comes from the cache
    the layer is given, and repeated remaps of one mask are merged by the compiler."""
    plan = plans.get(cache_from_kwargs(kwargs))
    if plan is None or not plan.stage_of or not plan.stage_of[idx]:
        return None
    mask = kwargs.get("attention_mask")
    layout = plan.layouts[plan.stage_of[idx]]
    if layout.length == plan.prompt_len and not layout.has_dummies:
        return None  # nothing was dropped: the caches and the model's masks agree
    if sliding:
        msg = (
            f"halfv: layer {idx} is a pruned sliding-window layer inside a compiled decode "
            "step; its mask needs its cache's host-side length. Decode it without "
            "torch.compile (the default dynamic cache), or keep 1.0"
        )
        raise UnsupportedModelError(msg)
    if not isinstance(mask, Tensor):
        if not layout.has_dummies:
            return None
        msg = (
            "halfv: a compiled decode step of a ragged batch needs the attention mask "
            "transformers builds for static caches; use cache_implementation='static'"
        )
        raise UnsupportedModelError(msg)
    hidden = hidden_of(args, kwargs)
    kwargs["attention_mask"] = remap_decode_mask(mask, layout, plan.prompt_len, hidden.shape[1], 0)
    return args, kwargs


def _decode_mask(
    stage: int, call: CallState, plan: PrefillPlan, mask: Any, hidden: Tensor
) -> Tensor | None:
    device = mask.device if isinstance(mask, Tensor) else hidden.device
    return remap_decode_mask(
        mask,
        plan.layout_on(stage, device),
        plan.prompt_len,
        hidden.shape[1],
        int(call.cache.get_seq_length()) if mask is None else 0,
    )
