"""A seeded generator of harder VQA items: counting, relative position, colour, glyphs.

Each image is 224 x 224 with several coloured shapes (circle, square, triangle) on a
uniform or textured (checker, stripes, noise) background. Item ``i`` of a split depends
only on ``(seed, i)``, so splits are reproducible, any index can be made on its own, and
train and test come from different seeds. Tasks cycle with the index
(count, position, color, glyph):

* ``count``: "how many circles are there?" -> ``"0"``..``"4"``
* ``position``: "is the red shape left of the blue shape?" -> ``"yes"`` / ``"no"``
* ``color``: "what color is the triangle?" -> a colour name
* ``glyph``: a small uppercase letter (PIL's default font, 14-18 px) in an outlined box;
  "what letter is in the box?" -> the letter

:data:`SYNTHETIC_ANSWERS` lists every possible answer (20).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from halfv_lab.data.items import LazyVQA, VQAItem

__all__ = [
    "COLORS",
    "GLYPHS",
    "IMAGE_SIZE",
    "SHAPES",
    "SPLIT_SEEDS",
    "SPLIT_SIZES",
    "SYNTHETIC_ANSWERS",
    "TASKS",
    "load_synthetic",
    "make_item",
]

IMAGE_SIZE = 224
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (150, 40, 180),
}
GLYPHS: tuple[str, ...] = ("A", "B", "E", "H", "K", "M", "R", "X")
TASKS: tuple[str, ...] = ("count", "position", "color", "glyph")
MAX_COUNT = 4
SYNTHETIC_ANSWERS: tuple[str, ...] = (
    *(str(n) for n in range(MAX_COUNT + 1)),
    "yes",
    "no",
    *COLORS,
    *(g.lower() for g in GLYPHS),
)
"""Every answer the generator can give (answers are compared lowercased)."""
SPLIT_SEEDS: dict[str, int] = {"train": 20_251_124, "test": 7_777_001}
SPLIT_SIZES: dict[str, int] = {"train": 50_000, "test": 2_000}
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _background(rng: np.random.Generator) -> tuple[Image.Image, str, tuple[int, int, int]]:
    """A light background; returns the image, its kind and its base colour."""
    base = tuple(int(v) for v in rng.integers(170, 236, size=3))
    kind = str(rng.choice(["uniform", "checker", "stripes", "noise"]))
    arr = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.int16)
    arr[:] = base
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    if kind == "checker":
        cell = int(rng.integers(8, 29))
        arr += (((yy // cell + xx // cell) % 2) * 18)[..., None].astype(np.int16)
    elif kind == "stripes":
        period = int(rng.integers(6, 21))
        arr += ((((xx + yy) // period) % 2) * 18)[..., None].astype(np.int16)
    elif kind == "noise":
        arr += rng.integers(-14, 15, size=arr.shape, dtype=np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img, kind, (int(base[0]), int(base[1]), int(base[2]))


def _place(
    rng: np.random.Generator, boxes: list[tuple[int, int, int]], radius: int, margin: int = 6
) -> tuple[int, int]:
    """A centre for a shape of ``radius`` that keeps ``margin`` px from earlier shapes."""
    for _ in range(500):
        cx = int(rng.integers(radius + 2, IMAGE_SIZE - radius - 2))
        cy = int(rng.integers(radius + 2, IMAGE_SIZE - radius - 2))
        if all(math.hypot(cx - x, cy - y) > radius + r + margin for x, y, r in boxes):
            return cx, cy
    msg = "could not place a shape without overlap; lower the shape count or size"
    raise RuntimeError(msg)


def _draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, center: tuple[int, int], r: int, color: str
) -> None:
    cx, cy = center
    fill = COLORS[color]
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "square":
        s = int(r * 0.8)
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    else:
        h = r * math.sqrt(3) / 2
        pts = [(cx, cy - r), (cx - h, cy + r / 2), (cx + h, cy + r / 2)]
        draw.polygon(pts, fill=fill)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _scene(
    rng: np.random.Generator, kinds: list[str], colors: list[str]
) -> tuple[Image.Image, list[dict[str, object]], str]:
    img, bg_kind, _ = _background(rng)
    draw = ImageDraw.Draw(img)
    placed: list[tuple[int, int, int]] = []
    shapes: list[dict[str, object]] = []
    for kind, color in zip(kinds, colors, strict=True):
        r = int(rng.integers(12, 21))
        cx, cy = _place(rng, placed, r)
        _draw_shape(draw, kind, (cx, cy), r, color)
        placed.append((cx, cy, r))
        shapes.append({"shape": kind, "color": color, "center": (cx, cy), "radius": r})
    return img, shapes, bg_kind


def _count(rng: np.random.Generator) -> tuple[Image.Image, str, str, dict[str, object]]:
    target = _pick(rng, SHAPES)
    n_target = int(rng.integers(0, MAX_COUNT + 1))
    others = [s for s in SHAPES if s != target]
    n_other = int(rng.integers(0 if n_target else 1, 4))
    kinds = [target] * n_target + [_pick(rng, others) for _ in range(n_other)]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    colors = [_pick(rng, tuple(COLORS)) for _ in kinds]
    img, shapes, bg = _scene(rng, kinds, colors)
    q = f"how many {_PLURAL[target]} are there?"
    return img, q, str(n_target), {"shapes": shapes, "background": bg, "target": target}


def _position(rng: np.random.Generator) -> tuple[Image.Image, str, str, dict[str, object]]:
    a, b = (str(c) for c in rng.choice(list(COLORS), size=2, replace=False))
    rest = [c for c in COLORS if c not in (a, b)]
    n_extra = int(rng.integers(0, 3))
    colors = [a, b] + [_pick(rng, rest) for _ in range(n_extra)]
    kinds = [_pick(rng, SHAPES) for _ in colors]
    for _ in range(100):  # insist on a clear horizontal gap between the two shapes
        img, shapes, bg = _scene(rng, kinds, colors)
        ax, bx = shapes[0]["center"][0], shapes[1]["center"][0]  # type: ignore[index]
        if abs(int(ax) - int(bx)) >= 16:
            break
    q = f"is the {a} shape left of the {b} shape?"
    answer = "yes" if ax < bx else "no"
    return img, q, answer, {"shapes": shapes, "background": bg}


def _color(rng: np.random.Generator) -> tuple[Image.Image, str, str, dict[str, object]]:
    target = _pick(rng, SHAPES)
    others = [s for s in SHAPES if s != target]
    kinds = [target] + [_pick(rng, others) for _ in range(int(rng.integers(1, 4)))]
    colors = [_pick(rng, tuple(COLORS)) for _ in kinds]
    order = rng.permutation(len(kinds))
    kinds, colors = [kinds[i] for i in order], [colors[i] for i in order]
    img, shapes, bg = _scene(rng, kinds, colors)
    answer = colors[kinds.index(target)]
    return img, f"what color is the {target}?", answer, {"shapes": shapes, "background": bg}


def _glyph(rng: np.random.Generator) -> tuple[Image.Image, str, str, dict[str, object]]:
    n_extra = int(rng.integers(0, 3))
    kinds = [_pick(rng, SHAPES) for _ in range(n_extra)]
    colors = [_pick(rng, tuple(COLORS)) for _ in kinds]
    img, shapes, bg = _scene(rng, kinds, colors)
    placed = [(int(s["center"][0]), int(s["center"][1]), int(s["radius"])) for s in shapes]  # type: ignore[index, call-overload]
    letter = _pick(rng, GLYPHS)
    size = int(rng.integers(14, 19))
    half = size // 2 + 5
    cx, cy = _place(rng, placed, half + 2)
    draw = ImageDraw.Draw(img)
    box = (cx - half, cy - half, cx + half, cy + half)
    draw.rectangle(box, fill=(255, 255, 255), outline=(0, 0, 0), width=2)
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    origin = (cx - (left + right) / 2, cy - (top + bottom) / 2)
    draw.text(origin, letter, fill=(0, 0, 0), font=font)
    meta = {"shapes": shapes, "background": bg, "box": box, "glyph": letter, "font_px": size}
    return img, "what letter is in the box?", letter, meta


_MAKERS = {"count": _count, "position": _position, "color": _color, "glyph": _glyph}


def make_item(seed: int, index: int) -> VQAItem:
    """The synthetic item ``index`` of the stream ``seed`` (depends on nothing else)."""
    rng = np.random.default_rng([seed, index])
    task = TASKS[index % len(TASKS)]
    img, question, answer, meta = _MAKERS[task](rng)
    return VQAItem(img, question, answer, task, meta)


def load_synthetic(split: str, limit: int | None = None, seed: int | None = None) -> LazyVQA:
    """A synthetic split: ``train`` (50,000 items) or ``test`` (2,000 items).

    Args:
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` items (tasks stay balanced).
        seed: override the split's seed (:data:`SPLIT_SEEDS`), e.g. for a fresh stream.

    Returns:
        A lazy sequence of :class:`~halfv_lab.data.VQAItem`; items are drawn on access.
    """
    if split not in SPLIT_SEEDS:
        msg = f"synthetic split must be 'train' or 'test', got {split!r}"
        raise ValueError(msg)
    n = SPLIT_SIZES[split] if limit is None else min(limit, SPLIT_SIZES[split])
    stream = SPLIT_SEEDS[split] if seed is None else seed
    return LazyVQA(n, lambda i: make_item(stream, i), f"synthetic/{split}")
