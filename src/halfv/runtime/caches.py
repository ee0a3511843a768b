"""KV caches of a pruned prefill: which kinds work, and static layers sized per stage.

A pruned layer caches a stage's ``S`` slots instead of the ``T`` prompt positions, so its
cache is shorter than an unpruned layer's by ``T - S``. Two kinds of transformers cache
(``transformers.cache_utils``, 5.17 to 5.24) hold that as they are:

* ``DynamicCache``: each ``DynamicLayer`` grows by concatenation, so it simply holds
  fewer entries. ``crop`` is relative from 5.24 on (``crop(-n)`` drops the last ``n``
  entries of every layer), which is right for layers of any length. A
  ``DynamicSlidingWindowLayer`` (Gemma 3's sliding layers) keeps the last
  ``window - 1`` entries it was given: for a pruned layer, the last slots of its stage,
  a superset of the positions still inside the window, which the decode masks
  (:mod:`halfv.runtime.decode_masks`) sort out by original position;
* ``StaticCache``: each ``StaticLayer`` preallocates ``max_cache_len`` entries when its
  first ``update`` runs (``lazy_initialization``). Before that happens in a pruned
  prefill, :func:`size_static_layer` shrinks the layer to ``max_cache_len - (T - S)``, so
  it holds exactly the stage's slots plus the same room for generated tokens as layer 0,
  and the decode masks remapped from layer 0 (``halfv.runtime.layout``) match its length.

A linear-attention layer's cache (``LinearAttentionLayer``: Qwen3.5's conv and recurrent
states) has no sequence axis, so it is the same whatever a prune removed; it may sit in
either kind of cache.

Any other cache (quantized, offloaded, static sliding-window layers) is refused when a
prompt would be shortened, with a message that names the fix; at keep 1.0 nothing is
shortened and every cache passes.
"""

from __future__ import annotations

from typing import Any

from halfv.errors import UnsupportedModelError

__all__ = ["check_cache", "is_static_cache", "reset_static_layers", "size_static_layer"]

_FULL_LENGTH = "_halfv_full_max_cache_len"


def _layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    return list(layers) if layers is not None else []


def _linear_layer_type() -> type | None:
    from transformers import cache_utils

    return getattr(cache_utils, "LinearAttentionLayer", None)


def _all_of(cache: Any, kind: type | tuple[type, ...]) -> bool:
    """Every layer is exactly ``kind`` (or one of them) or a linear-attention layer."""
    linear = _linear_layer_type()
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return all(type(layer) in kinds or type(layer) is linear for layer in _layers(cache))


def is_static_cache(cache: Any) -> bool:
    """Whether ``cache`` is a transformers ``StaticCache`` of plain static layers (and
    linear-attention layers)."""
    if cache is None:
        return False
    from transformers.cache_utils import StaticCache, StaticLayer

    return isinstance(cache, StaticCache) and _all_of(cache, StaticLayer)


def check_cache(cache: Any) -> None:
    """Refuse a cache that cannot hold layers of different lengths (``None`` passes).

    Called only when a prefill is about to shorten some layers' caches.
    """
    if cache is None or is_static_cache(cache):
        return
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    if isinstance(cache, DynamicCache) and _all_of(
        cache, (DynamicLayer, DynamicSlidingWindowLayer)
    ):
        return
    kinds = sorted({type(layer).__name__ for layer in _layers(cache)})
    if "StaticSlidingWindowLayer" in kinds:
        msg = (
            f"halfv cannot prune into a {type(cache).__name__} with sliding-window layers "
            "(StaticSlidingWindowLayer): a pruned layer would need a window ring sized to its "
            "own slots. Use generate(..., cache_implementation='dynamic') (a DynamicCache "
            "handles sliding layers), or keep 1.0, where every cache works"
        )
        raise UnsupportedModelError(msg)
    msg = (
        f"halfv cannot prune into a {type(cache).__name__} "
        f"(layers: {', '.join(kinds) or 'none'}): its layers cannot hold different lengths. "
        "Use generate(..., cache_implementation='dynamic') or 'static', or leave the cache "
        "argument unset; at keep 1.0 every cache works"
    )
    raise UnsupportedModelError(msg)


def reset_static_layers(cache: Any) -> None:
    """Give layers that an earlier pruned prefill shrank their full length back.

    transformers reuses one ``StaticCache`` across ``generate`` calls (it only zeroes it),
    so a layer sized for the last prompt's stage is re-allocated at full length by its
    next ``update`` unless the next prefill sizes it again.
    """
    for layer in _layers(cache):
        full = getattr(layer, _FULL_LENGTH, None)
        if full is not None:
            layer.max_cache_len = full
            layer.is_initialized = False
            delattr(layer, _FULL_LENGTH)


def size_static_layer(cache: Any, layer_idx: int, removed: int) -> None:
    """Size static layer ``layer_idx`` for a stage that holds ``removed`` fewer slots.

    Must run before the layer's first ``update`` of the prefill (it allocates then).
    """
    layers = _layers(cache)
    if layer_idx >= len(layers) or removed <= 0:
        return
    layer = layers[layer_idx]
    if type(layer) is _linear_layer_type():  # a recurrent state: no length to size
        return
    if getattr(layer, "is_initialized", False) and not hasattr(layer, _FULL_LENGTH):
        msg = (
            f"halfv: static cache layer {layer_idx} was allocated before the pruned prefill "
            "reached it; create the StaticCache without early_initialization(), or let "
            "generate() build it (cache_implementation='static')"
        )
        raise UnsupportedModelError(msg)
    full = getattr(layer, _FULL_LENGTH, layer.max_cache_len)
    setattr(layer, _FULL_LENGTH, full)
    layer.max_cache_len = full - removed
    layer.is_initialized = False
