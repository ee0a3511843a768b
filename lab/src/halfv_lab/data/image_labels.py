"""Per-image labels: what each training image shows, one class per question type.

The zoo's VQA losses reach the vision tower only through a question, and in the runs of
docs/models.md that signal lost shape: a probe-trained tower encoded easy-VQA's shapes no
better than a random one. These labels say what is in the image directly, so a tower can
be pre-trained on them with pooled heads (:mod:`halfv_lab.zoo.label_heads`) before the joint
stage. Each :class:`LabelHead` is one classification; an image gets a class index for
every head, or :data:`UNKNOWN` where the head does not apply or its answer is unknown:

* easy-VQA (``task == "easyvqa"``): the shape and the colour, as the image's questions
  tell them (:func:`halfv_lab.data.easyvqa.image_attributes`).
* synthetic (from the generator's ``meta``): the count of each shape kind; the colour of
  each kind when it appears at most once (``"none"`` when absent); whether each colour
  appears; for each pair of colours that both appear exactly once, whether the first is
  left of the second (when their centres are at least :data:`MIN_GAP_PX` apart); the
  glyph in the box (``"none"`` without one).

Example::

    from halfv_lab.data import load_split
    from halfv_lab.data.image_labels import LABEL_HEADS, label_row
    item = load_split("synthetic", "train")[0]
    dict(zip((h.name for h in LABEL_HEADS), label_row(item)))
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from halfv_lab.data.easyvqa import EASYVQA_ANSWERS, image_attributes
from halfv_lab.data.items import VQAItem
from halfv_lab.data.synthetic import COLORS, GLYPHS, MAX_COUNT, SHAPES

__all__ = ["LABEL_HEADS", "MIN_GAP_PX", "UNKNOWN", "LabelHead", "label_row"]

UNKNOWN = -100
"""The class index of a label that does not apply (``ignore_index`` of the loss)."""
MIN_GAP_PX = 8
"""Smallest horizontal gap between two shapes' centres for a left/right label."""
_MAX_OF_ONE_KIND = MAX_COUNT + 3  # a count scene: up to 4 targets and 3 others


@dataclass(frozen=True)
class LabelHead:
    """One per-image classification: its name and its classes, in index order."""

    name: str
    classes: tuple[str, ...]


_NO_YES = ("no", "yes")
_COLOUR_PAIRS = tuple(combinations(COLORS, 2))
LABEL_HEADS: tuple[LabelHead, ...] = (
    LabelHead("easyvqa/shape", EASYVQA_ANSWERS[:3]),
    LabelHead("easyvqa/colour", EASYVQA_ANSWERS[3:11]),
    *(LabelHead(f"count/{s}", tuple(map(str, range(_MAX_OF_ONE_KIND + 1)))) for s in SHAPES),
    *(LabelHead(f"colour-of/{s}", ("none", *COLORS)) for s in SHAPES),
    *(LabelHead(f"has/{c}", _NO_YES) for c in COLORS),
    *(LabelHead(f"left/{a}-{b}", _NO_YES) for a, b in _COLOUR_PAIRS),
    LabelHead("glyph", ("none", *(g.lower() for g in GLYPHS))),
)
"""Every head, in the order of :func:`label_row`'s entries."""


_CLASS_INDEX = {h.name: {c: i for i, c in enumerate(h.classes)} for h in LABEL_HEADS}


def _index(head: str, value: str | None) -> int:
    if value is None:
        return UNKNOWN
    return _CLASS_INDEX[head][value]


def _easyvqa_labels(item: VQAItem) -> dict[str, int]:
    path = str(item.meta["path"])
    split = Path(path).parent.parent.name  # <data>/<split>/images/<n>.png
    known = image_attributes(split) if split in ("train", "test") else {}
    shape, colour = known.get(path, (None, None))
    return {
        "easyvqa/shape": _index("easyvqa/shape", shape),
        "easyvqa/colour": _index("easyvqa/colour", colour),
    }


def _synthetic_labels(meta: dict[str, object]) -> dict[str, int]:
    shapes = meta["shapes"]
    if not isinstance(shapes, list):
        msg = f"synthetic meta['shapes'] must be a list, got {type(shapes).__name__}"
        raise TypeError(msg)
    out: dict[str, int] = {}
    for kind in SHAPES:
        of_kind = [s for s in shapes if s["shape"] == kind]
        out[f"count/{kind}"] = len(of_kind)
        colour = "none" if not of_kind else of_kind[0]["color"] if len(of_kind) == 1 else None
        out[f"colour-of/{kind}"] = _index(f"colour-of/{kind}", colour)
    xs: dict[str, list[int]] = {c: [] for c in COLORS}
    for s in shapes:
        xs[s["color"]].append(int(s["center"][0]))
    for colour in COLORS:
        out[f"has/{colour}"] = int(bool(xs[colour]))
    for a, b in _COLOUR_PAIRS:
        clear = len(xs[a]) == len(xs[b]) == 1 and abs(xs[a][0] - xs[b][0]) >= MIN_GAP_PX
        out[f"left/{a}-{b}"] = int(xs[a][0] < xs[b][0]) if clear else UNKNOWN
    glyph = meta.get("glyph")
    out["glyph"] = _index("glyph", str(glyph).lower() if glyph else "none")
    return out


def label_row(item: VQAItem) -> list[int]:
    """The class index of every head in :data:`LABEL_HEADS` for ``item``'s image.

    Heads of the other dataset, and labels the image does not determine, are
    :data:`UNKNOWN`. An item of neither dataset gets a row of :data:`UNKNOWN`.
    """
    if item.task == "easyvqa":
        known = _easyvqa_labels(item)
    elif "shapes" in item.meta:
        known = _synthetic_labels(item.meta)
    else:
        known = {}
    return [known.get(h.name, UNKNOWN) for h in LABEL_HEADS]
