"""Reuse the vision tower's output across the runs of the accuracy benchmark (exact).

Every run of one backbone on one dataset (unpruned, then each method) answers the same
questions in the same batches, and pruning acts only on the language model, so the vision
tower computes the same image features in every run. :func:`reuse_image_features`
memoises ``get_image_features`` of a transformers VLM by the exact bytes of its inputs:
the first run computes and stores the output, later calls with bitwise-equal inputs get a
copy of the stored features, which are what the tower would have recomputed. Answers do
not change (``tests/test_bench_accuracy.py`` checks it); what is saved is the tower's time,
about a quarter of the CPU time per pruned run with the zoo's 672-px towers.

Only ``pooler_output`` (the projected features the model's ``forward`` reads) is kept, on
the model's device; the cache lives for one ``with`` block (one backbone and dataset).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["FeatureCache", "reuse_image_features"]


def _clone(value: Any) -> Any:
    """A copy of ``value`` with every tensor cloned (tuples, lists and dicts followed).

    Dict subclasses keep their class (transformers' ``ModelOutput`` is one).
    """
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple | list):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return type(value)(**{k: _clone(v) for k, v in value.items()})
    return value


def _digest(value: Any, hasher: Any) -> None:
    """Feed ``value`` (tensors by dtype, shape and bytes; the rest by repr) to ``hasher``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().contiguous().cpu()
        hasher.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, tuple | list):
        hasher.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _digest(item, hasher)
    elif isinstance(value, dict):
        hasher.update(f"D{len(value)}".encode())
        for key in sorted(value):
            hasher.update(repr(key).encode())
            _digest(value[key], hasher)
    else:
        hasher.update(repr(value).encode())


class FeatureCache:
    """``get_image_features`` with its outputs stored by the bytes of its inputs.

    Attributes:
        calls: calls made to the cache.
        computed: calls that ran the vision tower (the rest were served from the store).
    """

    def __init__(self, compute: Callable[..., Any]) -> None:
        self.compute = compute
        # generate() reads the signature to pick the encoder's arguments: keep the original
        self.__signature__ = inspect.signature(compute)
        self.store: dict[str, Any] = {}
        self.calls = 0
        self.computed = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Return the stored output for these exact inputs, or compute and store it."""
        self.calls += 1
        hasher = hashlib.sha256()
        _digest((args, kwargs), hasher)
        key = hasher.hexdigest()
        if key not in self.store:
            self.computed += 1
            out = self.compute(*args, **kwargs)
            pooled = getattr(out, "pooler_output", None)
            slim = type(out)(pooler_output=pooled) if pooled is not None else out
            self.store[key] = _clone(slim)
            return out
        stored = self.store[key]
        if getattr(stored, "pooler_output", None) is not None:
            return type(stored)(pooler_output=_clone(stored.pooler_output))
        return _clone(stored)


def _feature_owner(model: Any) -> Any | None:
    """The module whose ``forward`` calls ``self.get_image_features`` (``model.model``)."""
    inner = getattr(model, "model", None)
    return inner if callable(getattr(inner, "get_image_features", None)) else None


@contextmanager
def reuse_image_features(model: Any, *, enabled: bool = True) -> Iterator[FeatureCache | None]:
    """Within the block, ``model`` computes the image features of each distinct batch once.

    Args:
        model: a transformers VLM whose inner ``model`` has ``get_image_features`` (the
            zoo's and transformers' LLaVA, InternVL and Qwen2.5-VL); anything else runs
            unchanged and the block yields ``None``.
        enabled: ``False`` leaves the model alone (yields ``None``).

    Yields:
        The :class:`FeatureCache` (its counters say how many towers were run), or ``None``.
    """
    owner = _feature_owner(model) if enabled else None
    if owner is None:
        yield None
        return
    shadowed = owner.__dict__.get("get_image_features")
    cache = FeatureCache(owner.get_image_features)
    owner.get_image_features = cache  # an instance attribute shadows the method
    try:
        yield cache
    finally:
        if shadowed is None:
            del owner.get_image_features
        else:
            owner.get_image_features = shadowed
