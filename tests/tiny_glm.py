"""Tiny random-init GLM-4.1V / GLM-4.6V / GLM-4.1V-MoE and Qwen3.5 / Qwen3.5-MoE models.

Same shape as :mod:`tiny`: each builder returns a :class:`tiny.Tiny` whose ``prompt``
lays out samples the way the family's processor does (a start marker, the image
placeholders, an end marker; ``mm_token_type_ids`` 1 on the placeholders, the patch
grid in ``image_grid_thw``). Batches are left-padded.

The GLM text config keeps the family's partial (``partial_rotary_factor=0.5``),
interleaved rotary; the Qwen3.5 text config alternates linear-attention (Gated DeltaNet)
and full-attention layers (``full_attention_interval=2``, so the shallow and deep
scoring layers of :func:`halfv.testing.check_backbone`'s schedule are full attention)
and keeps the family's gated queries and partial rotary (0.25).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tiny import TEXT, Segment, Tiny, _left_pad, _text_ids

IMAGE, VIDEO, START, END = 995, 996, 993, 994


def _grid_prompt(model: nn.Module, family: str, per_image: int, grid: int, patch: int) -> Tiny:
    """A Qwen-style prompt builder: ``START IMAGE*per_image END`` per image."""

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, types, pixels, grids = [], [], [], []
        for sample in samples:
            row: list[int] = []
            typ: list[int] = []
            for seg in sample:
                if seg == "img":
                    row += [START] + [IMAGE] * per_image + [END]
                    typ += [0] + [1] * per_image + [0]
                    pixels.append(torch.randn(grid * grid, 3 * 2 * patch * patch, generator=gen))
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

    return Tiny(family, model, per_image, build)


def build_glm4v(
    layers: int = 6, grid: int = 8, seed: int = 0, kind: str = "glm4v", partial: float = 0.5
) -> Tiny:
    """GLM-4.1V (``kind="glm4v"``), GLM-4.6V (``"glm46v"``) or GLM-4.1V-MoE (``"glm4v_moe"``)."""
    import transformers

    torch.manual_seed(seed)
    vision: dict[str, Any] = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "image_size": 112,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    text: dict[str, Any] = {
        **TEXT,
        "num_hidden_layers": layers,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": [2, 1, 1] if partial == 0.5 else [2, 3, 3],
            "partial_rotary_factor": partial,
        },
    }
    if kind == "glm4v_moe":
        text.update(
            n_routed_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
        )
    ids = {
        "image_token_id": IMAGE,
        "video_token_id": VIDEO,
        "image_start_token_id": START,
        "image_end_token_id": END,
        "video_start_token_id": 991,
        "video_end_token_id": 992,
    }
    names = {
        "glm4v": ("Glm4vConfig", "Glm4vForConditionalGeneration"),
        "glm46v": ("Glm46VConfig", "Glm46VForConditionalGeneration"),
        "glm4v_moe": ("Glm4vMoeConfig", "Glm4vMoeForConditionalGeneration"),
    }
    config_cls, model_cls = (getattr(transformers, n) for n in names[kind])
    if kind == "glm46v":
        text["model_type"] = "glm4v_text"
        vision["model_type"] = "glm4v_vision"
    cfg = config_cls(vision_config=vision, text_config=text, **ids)
    model = model_cls(cfg).eval()
    return _grid_prompt(model, kind, grid * grid // 4, grid, 14)


def build_qwen35(
    layers: int = 6, grid: int = 8, seed: int = 0, moe: bool = False, interval: int = 2
) -> Tiny:
    """Qwen3.5 (or Qwen3.5-MoE with ``moe=True``): a full-attention layer every
    ``interval`` layers (the released models: 4), linear-attention layers between."""
    import transformers

    torch.manual_seed(seed)
    text: dict[str, Any] = {
        **TEXT,
        "num_hidden_layers": layers,
        "head_dim": 32,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "full_attention_interval": interval,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
            "partial_rotary_factor": 0.25,
        },
    }
    if moe:
        text.update(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
        )
    vision: dict[str, Any] = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,
    }
    ids = {
        "image_token_id": IMAGE,
        "video_token_id": VIDEO,
        "vision_start_token_id": START,
        "vision_end_token_id": END,
    }
    prefix = "Qwen3_5Moe" if moe else "Qwen3_5"
    config_cls = getattr(transformers, f"{prefix}Config")
    model_cls = getattr(transformers, f"{prefix}ForConditionalGeneration")
    cfg = config_cls(vision_config=vision, text_config=text, **ids)
    model = model_cls(cfg).eval()
    return _grid_prompt(model, "qwen3_5_moe" if moe else "qwen3_5", grid * grid // 4, grid, 16)
