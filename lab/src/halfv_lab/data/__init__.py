"""VQA data for training and evaluating the zoo models.

* ``easyvqa``: the real easy-VQA dataset (``pip install --no-deps easy-vqa``), 64 x 64.
* ``synthetic``: a seeded generator of counting, relative-position, colour and glyph
  questions (:mod:`halfv_lab.data.synthetic`).

Example::

    from halfv_lab.data import load_split
    test = load_split("synthetic", "test", limit=200)
    item = test[0]  # VQAItem(image=<PIL 224x224>, question=..., answer=..., task=...)
"""

from __future__ import annotations

from halfv_lab.data.easyvqa import EASYVQA_ANSWERS, load_easyvqa
from halfv_lab.data.items import LazyVQA, VQAItem
from halfv_lab.data.synthetic import SYNTHETIC_ANSWERS, load_synthetic

__all__ = [
    "DATASETS",
    "EASYVQA_ANSWERS",
    "SYNTHETIC_ANSWERS",
    "LazyVQA",
    "VQAItem",
    "answer_vocab",
    "load_easyvqa",
    "load_split",
    "load_synthetic",
]

DATASETS: tuple[str, ...] = ("easyvqa", "synthetic")


def load_split(name: str, split: str, limit: int | None = None) -> LazyVQA:
    """Load a dataset split as a lazy sequence of :class:`VQAItem`.

    Args:
        name: ``"easyvqa"`` or ``"synthetic"``.
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` items (both datasets are in mixed order).

    Returns:
        The items, made on access.
    """
    if limit is not None and limit < 0:
        msg = f"limit must be None or >= 0, got {limit}"
        raise ValueError(msg)
    if name == "easyvqa":
        return load_easyvqa(split, limit)
    if name == "synthetic":
        return load_synthetic(split, limit)
    msg = f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}"
    raise ValueError(msg)


def answer_vocab(name: str) -> tuple[str, ...]:
    """Every answer dataset ``name`` can give."""
    if name == "easyvqa":
        return EASYVQA_ANSWERS
    if name == "synthetic":
        return SYNTHETIC_ANSWERS
    msg = f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}"
    raise ValueError(msg)
