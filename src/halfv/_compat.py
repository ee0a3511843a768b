"""Bridges between the transformers releases halfv supports (5.17 to 5.24, see pyproject.toml).

transformers 5.24 renamed the KV cache argument and output field from ``past_key_values`` to
``cache`` (the old name still works on models, with a FutureWarning, until 5.40). halfv's
hooks see whatever name the model passes to its decoder layers, so they read both; code that
calls a model itself uses :func:`cache_kwarg`, the name the installed release expects.
transformers is imported lazily, as everywhere in halfv.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def cache_kwarg() -> str:
    """The keyword the installed transformers uses for the KV cache (``cache`` from 5.24)."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    fields = BaseModelOutputWithPast.__dataclass_fields__
    return "cache" if "cache" in fields else "past_key_values"


def cache_from_kwargs(kwargs: dict[str, Any]) -> Any:
    """The KV cache a forward call was given, under either name, or ``None``."""
    found = kwargs.get("cache")
    return found if found is not None else kwargs.get("past_key_values")


def check_dynamic_cache(cache: Any) -> None:
    """Refuse a KV cache other than a ``DynamicCache`` (``None`` passes)."""
    if cache is None:
        return
    from transformers.cache_utils import DynamicCache

    from halfv.errors import UnsupportedModelError

    if not isinstance(cache, DynamicCache):
        msg = (
            f"halfv needs a DynamicCache (per-layer caches of different lengths), got "
            f"{type(cache).__name__}; call generate(..., cache_implementation='dynamic') "
            "or leave the cache argument unset"
        )
        raise UnsupportedModelError(msg)


def cache_from_output(output: Any) -> Any:
    """The KV cache a model output carries, read without the deprecated alias."""
    return getattr(output, cache_kwarg(), None)
