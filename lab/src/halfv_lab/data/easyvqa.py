"""The easy-VQA dataset (``pip install --no-deps easy-vqa``): 64 x 64 shape images.

4,000 train / 1,000 test images with 38,575 / 9,673 questions and 13 answers (yes/no,
colours, shapes). The package is read from its folder (found with
:func:`importlib.util.find_spec`); images are opened on access. Questions are put in a
fixed shuffled order, so any prefix (``limit``) mixes images and question types. The zoo
processors upscale the images to each family's input size.
"""

from __future__ import annotations

import importlib.util
import json
import random
from functools import cache
from pathlib import Path

from PIL import Image

from halfv_lab.data.items import LazyVQA, VQAItem

__all__ = [
    "EASYVQA_ANSWERS",
    "easyvqa_dir",
    "image_attributes",
    "image_shapes",
    "load_easyvqa",
]

EASYVQA_ANSWERS: tuple[str, ...] = (
    "circle", "rectangle", "triangle",
    "red", "green", "blue", "yellow", "teal", "brown", "gray", "black",
    "yes", "no",
)  # fmt: skip
"""The 13 answers of easy-VQA."""
_SHUFFLE_SEED = 0


def easyvqa_dir() -> Path:
    """The ``data`` folder of the installed ``easy_vqa`` package.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec("easy_vqa")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        data = Path(folder) / "data"
        if (data / "answers.txt").is_file():
            return data
    msg = "the easy-VQA data was not found: pip install --no-deps easy-vqa"
    raise FileNotFoundError(msg)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        msg = f"easy-VQA split must be 'train' or 'test', got {split!r}"
        raise ValueError(msg)


@cache
def _questions(split: str) -> tuple[tuple[str, str, str], ...]:
    """``(question, answer, image_path)`` triples of ``split`` in the fixed shuffled order."""
    root = easyvqa_dir() / split
    raw = json.loads((root / "questions.json").read_text())
    rows = [(str(q), str(a), str(root / "images" / f"{int(i)}.png")) for q, a, i in raw]
    random.Random(_SHUFFLE_SEED).shuffle(rows)
    return tuple(rows)


def image_shapes(split: str) -> dict[str, str]:
    """The shape of every image of ``split`` that a question asks the shape of.

    Returns:
        ``{image_path: "circle" | "rectangle" | "triangle"}``, in the fixed shuffled order of
        the questions (easy-VQA draws one shape per image, so one answer fixes it).
    """
    _check_split(split)
    shapes: dict[str, str] = {}
    for _question, answer, path in _questions(split):
        if answer in EASYVQA_ANSWERS[:3]:
            shapes.setdefault(path, answer)
    return shapes


def _attribute_facts(question: str, answer: str) -> list[str]:
    """The shape and colour words one question and its answer say the image has."""
    words = question.rstrip("?").split()
    named = [w for w in words if w in EASYVQA_ANSWERS[:11]]
    if answer in EASYVQA_ANSWERS[:11]:  # "what color is the circle?" -> "red"
        return [answer, *named]
    negated = "not" in words or words[:2] == ["is", "no"]
    present = (answer == "yes") != negated
    return named if present else []


@cache
def image_attributes(split: str) -> dict[str, tuple[str | None, str | None]]:
    """The shape and colour of every image of ``split``, as its questions tell them.

    Every question that names the image's shape or colour, or confirms one ("is there a
    red shape?" yes, "is there not a circle?" no), counts. easy-VQA draws one shape of one
    colour per image, so the facts of an image never disagree (a test checks this).

    Returns:
        ``{image_path: (shape or None, colour or None)}``; ``None`` where no question tells.
    """
    _check_split(split)
    found: dict[str, dict[str, str]] = {}
    for question, answer, path in _questions(split):
        facts = found.setdefault(path, {})
        for word in _attribute_facts(question, answer):
            kind = "shape" if word in EASYVQA_ANSWERS[:3] else "colour"
            facts.setdefault(kind, word)
    return {path: (f.get("shape"), f.get("colour")) for path, f in found.items()}


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def load_easyvqa(split: str, limit: int | None = None) -> LazyVQA:
    """Load an easy-VQA split.

    Args:
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` questions of the shuffled order.

    Returns:
        A lazy sequence of :class:`~halfv_lab.data.VQAItem` with ``task="easyvqa"`` and
        ``meta={"path": image_path}``.
    """
    _check_split(split)
    rows = _questions(split)
    n = len(rows) if limit is None else min(limit, len(rows))

    def make(i: int) -> VQAItem:
        q, a, path = rows[i]
        return VQAItem(_open_rgb(path), q, a, "easyvqa", {"path": path})

    return LazyVQA(n, make, f"easyvqa/{split}")
