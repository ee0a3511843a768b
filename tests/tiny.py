"""Tiny random-init VLMs of the four built-in families, and prompts for them.

Every builder returns a :class:`Tiny` with the model (eval, float32) and a ``prompt``
function that builds real model inputs (token ids with the family's visual placeholders
expanded, pixel values, and the family's extra tensors) for a list of samples. A sample is
a list of segments: an int ``n`` is ``n`` text tokens, the string ``"img"`` one image.
Batches are left-padded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from halfv.interfaces import SSRPolicy
from halfv.ops.selection import uniform_indices

TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
}
PAD = 0
Segment = int | str


@dataclass
class Tiny:
    family: str
    model: nn.Module
    visual_per_image: int
    build: Callable[[Sequence[Sequence[Segment]], int], dict[str, Any]]

    def prompt(self, samples: Sequence[Sequence[Segment]], seed: int = 0) -> dict[str, Any]:
        return self.build(samples, seed)


def _text_ids(n: int, gen: torch.Generator) -> list[int]:
    return torch.randint(10, 900, (n,), generator=gen).tolist()


def _left_pad(rows: list[list[int]], extra: list[list[int]] | None = None) -> dict[str, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if extra is not None:
        types = torch.zeros_like(ids)
        for i, r in enumerate(extra):
            types[i, width - len(r) :] = torch.tensor(r)
        out["mm_token_type_ids"] = types
    return out


def build_llava(layers: int = 6, image_size: int = 112, seed: int = 0) -> Tiny:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=14,
        ),
        text_config=LlamaConfig(**{**TEXT, "num_hidden_layers": layers}),
        image_token_id=998,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(cfg).eval()
    per_image = (image_size // 14) ** 2

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, images = [], []
        for sample in samples:
            row: list[int] = []
            for seg in sample:
                if seg == "img":
                    row += [998] * per_image
                    images.append(torch.randn(3, image_size, image_size, generator=gen))
                else:
                    row += _text_ids(int(seg), gen)
            rows.append(row)
        out: dict[str, Any] = _left_pad(rows)
        if images:
            out["pixel_values"] = torch.stack(images)
        return out

    return Tiny("llava", model, per_image, build)


def build_qwen(layers: int = 6, grid: int = 16, seed: int = 0) -> Tiny:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    ids = {
        "image_token_id": 995,
        "video_token_id": 996,
        "vision_start_token_id": 993,
        "vision_end_token_id": 994,
    }
    cfg = Qwen2_5_VLConfig(
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [0],
        },
        text_config={
            **TEXT,
            "num_hidden_layers": layers,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": [2, 3, 3],
            },
        },
        **ids,
    )
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    per_image = grid * grid // 4

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, types, pixels, grids = [], [], [], []
        for sample in samples:
            row: list[int] = []
            typ: list[int] = []
            for seg in sample:
                if seg == "img":
                    row += [993] + [995] * per_image + [994]
                    typ += [0] + [1] * per_image + [0]
                    pixels.append(torch.randn(grid * grid, 3 * 2 * 14 * 14, generator=gen))
                    grids.append([1, grid, grid])
                else:
                    text = _text_ids(int(seg), gen)
                    row += text
                    typ += [0] * len(text)
            rows.append(row)
            types.append(typ)
        out: dict[str, Any] = _left_pad(rows, types)
        if pixels:
            out["pixel_values"] = torch.cat(pixels)
            out["image_grid_thw"] = torch.tensor(grids)
        return out

    return Tiny("qwen2_5_vl", model, per_image, build)


def build_internvl(layers: int = 6, image_size: int = 224, seed: int = 0) -> Tiny:
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": [image_size, image_size],
            "patch_size": [14, 14],
        },
        text_config={**TEXT, "num_hidden_layers": layers, "model_type": "qwen2"},
        image_token_id=998,
        downsample_ratio=0.5,
    )
    model = InternVLForConditionalGeneration(cfg).eval()
    per_image = (image_size // 14 // 2) ** 2

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, images = [], []
        for sample in samples:
            row: list[int] = []
            for seg in sample:
                if seg == "img":
                    row += [996] + [998] * per_image + [997]
                    images.append(torch.randn(3, image_size, image_size, generator=gen))
                else:
                    row += _text_ids(int(seg), gen)
            rows.append(row)
        out: dict[str, Any] = _left_pad(rows)
        if images:
            out["pixel_values"] = torch.stack(images)
        return out

    return Tiny("internvl", model, per_image, build)


def build_llava_next(layers: int = 6, seed: int = 0) -> Tiny:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
    )

    torch.manual_seed(seed)
    size = 56
    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=size,
            patch_size=14,
        ),
        text_config=LlamaConfig(**{**TEXT, "num_hidden_layers": layers}),
        image_token_id=998,
        image_grid_pinpoints=[[size, size * 2], [size * 2, size]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaNextForConditionalGeneration(cfg).eval()
    image_sizes = torch.tensor([[size, size * 2]])
    with torch.no_grad():
        probe = torch.randn(1, 3, 3, size, size)
        feats = model.model.get_image_features(probe, image_sizes)
    feats = getattr(feats, "pooler_output", feats)
    per_image = int(feats[0].shape[0])

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, images = [], []
        for sample in samples:
            row: list[int] = []
            for seg in sample:
                if seg == "img":
                    row += [998] * per_image
                    images.append(torch.randn(3, 3, size, size, generator=gen))
                else:
                    row += _text_ids(int(seg), gen)
            rows.append(row)
        out: dict[str, Any] = _left_pad(rows)
        if images:
            out["pixel_values"] = torch.stack(images)
            out["image_sizes"] = image_sizes.expand(len(images), 2).clone()
        return out

    return Tiny("llava_next", model, per_image, build)


BUILDERS: dict[str, Callable[..., Tiny]] = {
    "llava": build_llava,
    "llava_next": build_llava_next,
    "qwen2_5_vl": build_qwen,
    "internvl": build_internvl,
}


class StrideSSR(SSRPolicy):
    """A query-independent SSR prune (uniform stride), so a from-scratch recompute of a
    longer sequence keeps exactly the same tokens as the cached run."""

    name: ClassVar[str] = "stride"
    mode: ClassVar = "prune"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        index = uniform_indices(scores.shape[1], keep, scores.device)
        return index.expand(scores.shape[0], keep)
