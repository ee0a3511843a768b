"""Video prompts for the tiny models of tests/tiny.py (Qwen2.5-VL and InternVL).

A sample is a list of segments: an int ``n`` is ``n`` text tokens, ``"img"`` one image,
``("vid", t)`` one video of ``t`` frames. Each sample's random tokens and pixels come from
its own generator (seeded by ``seed`` and the sample's index), so a sample built alone
(``first=i``) is the same as sample ``i`` of a batch. Batches are left-padded.

* Qwen2.5-VL (as ``Qwen2_5_VLProcessor`` lays them out): an image is
  ``<|vision_start|> <|image_pad|> * g*g/4 <|vision_end|>``; a video of ``t`` frames is one
  run ``<|vision_start|> <|video_pad|> * t*g*g/4 <|vision_end|>`` with ``video_grid_thw``
  row ``(t, g, g)`` and ``pixel_values_videos`` of ``t*g*g`` patches.
* InternVL (as ``InternVLProcessor.replace_video_token`` writes them): each frame is an
  image, ``Frame{i}: <img> <IMG_CONTEXT> * n </img>`` joined by newlines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tiny import PAD, Tiny, build_internvl, build_qwen

QWEN_IDS = {"image": 995, "video": 996, "start": 993, "end": 994}
INTERNVL_IDS = {"image": 998, "start": 996, "end": 997, "newline": 13}
Segment = int | str | tuple[str, int]

_MODELS: dict[tuple[str, str], Tiny] = {}


def tiny_model(family: str, attention: str = "sdpa") -> Tiny:
    """The tiny ``qwen2_5_vl`` (grid 8: 16 tokens per image or frame) or ``internvl``
    (112 px: 16 tokens per image or frame) model, built once per attention."""
    key = (family, attention)
    if key not in _MODELS:
        built = build_qwen(grid=8) if family == "qwen2_5_vl" else build_internvl(image_size=112)
        model: Any = built.model
        model.set_attn_implementation(attention)
        _MODELS[key] = built
    return _MODELS[key]


def _text(n: int, gen: torch.Generator) -> list[int]:
    return torch.randint(10, 900, (n,), generator=gen).tolist()


def _pad(rows: list[list[int]], types: list[list[int]] | None) -> dict[str, Any]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    kinds = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
        if types is not None:
            kinds[i, width - len(r) :] = torch.tensor(types[i])
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        out["mm_token_type_ids"] = kinds
    return out


def qwen_prompt(
    samples: Sequence[Sequence[Segment]], seed: int = 0, *, grid: int = 8, first: int = 0
) -> dict[str, Any]:
    """Qwen2.5-VL inputs with images and videos (see the module docstring)."""
    per = grid * grid // 4
    patch = 3 * 2 * 14 * 14
    rows, types = [], []
    images, image_grids, videos, video_grids = [], [], [], []
    for i, sample in enumerate(samples):
        gen = torch.Generator().manual_seed(seed * 1000 + first + i)
        row: list[int] = []
        typ: list[int] = []
        for seg in sample:
            if seg == "img":
                row += [QWEN_IDS["start"]] + [QWEN_IDS["image"]] * per + [QWEN_IDS["end"]]
                typ += [0] + [1] * per + [0]
                images.append(torch.randn(grid * grid, patch, generator=gen))
                image_grids.append([1, grid, grid])
            elif isinstance(seg, tuple):
                t = seg[1]
                row += [QWEN_IDS["start"]] + [QWEN_IDS["video"]] * (t * per) + [QWEN_IDS["end"]]
                typ += [0] + [2] * (t * per) + [0]
                videos.append(torch.randn(t * grid * grid, patch, generator=gen))
                video_grids.append([t, grid, grid])
            else:
                text = _text(int(seg), gen)
                row += text
                typ += [0] * len(text)
        rows.append(row)
        types.append(typ)
    out = _pad(rows, types)
    if images:
        out["pixel_values"] = torch.cat(images)
        out["image_grid_thw"] = torch.tensor(image_grids)
    if videos:
        out["pixel_values_videos"] = torch.cat(videos)
        out["video_grid_thw"] = torch.tensor(video_grids)
    return out


def internvl_prompt(
    samples: Sequence[Sequence[Segment]], seed: int = 0, *, size: int = 112, first: int = 0
) -> dict[str, Any]:
    """InternVL inputs whose videos are written frame by frame, as images."""
    per = (size // 14 // 2) ** 2
    rows, pixels = [], []
    ids = INTERNVL_IDS
    for i, sample in enumerate(samples):
        gen = torch.Generator().manual_seed(seed * 1000 + first + i)
        row: list[int] = []
        for seg in sample:
            frames = seg[1] if isinstance(seg, tuple) else 1 if seg == "img" else 0
            for f in range(frames):
                if isinstance(seg, tuple):  # "Frame{f+1}: " before, a newline between
                    row += ([ids["newline"]] if f else []) + _text(3, gen)
                row += [ids["start"]] + [ids["image"]] * per + [ids["end"]]
                pixels.append(torch.randn(3, size, size, generator=gen))
            if not frames:
                row += _text(int(seg), gen)  # type: ignore[arg-type]
        rows.append(row)
    out = _pad(rows, None)
    if pixels:
        out["pixel_values"] = torch.stack(pixels)
    return out


def prompt(
    family: str, samples: Sequence[Sequence[Segment]], seed: int = 0, first: int = 0
) -> dict[str, Any]:
    """The family's prompt builder."""
    build = qwen_prompt if family == "qwen2_5_vl" else internvl_prompt
    return build(samples, seed, first=first)
