"""Tiny random-init Qwen2-VL, Qwen3-VL and Qwen3-VL-MoE models, with image and video prompts.

Each builder returns a :class:`QwenTiny`: the model (eval, float32) and a ``prompt``
function that builds real model inputs for a list of samples. A sample is a list of
segments: an int ``n`` is ``n`` text tokens, ``"img"`` one image, ``"vid"`` one video of
:data:`FRAMES` frames. Batches are left-padded.

Placeholders follow each family's processor: an image is
``<vision_start> <image_pad> * N <vision_end>``; a Qwen2-VL video is one span of
``<video_pad>`` over all frames; a Qwen3-VL video is, per temporal patch, a timestamp
(text tokens) then ``<vision_start> <video_pad> * N <vision_end>``, with
``video_grid_thw`` split per frame by the model. ``mm_token_type_ids`` is 1 on image and
2 on video placeholders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

IMAGE, VIDEO, VISION_START, VISION_END = 995, 996, 993, 994
GRID = 8  # patches per side; 2x2 merge -> 16 visual tokens per image / temporal patch
FRAMES = 4  # video frames; temporal patch 2 -> 2 temporal patches
TIMESTAMP = 2  # text tokens before each Qwen3-VL video frame
LAYERS = 6
DEEPSTACK = (0, 1, 2)  # vision layers whose features are added after text layers 0, 1, 2
PAD = 0
TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
    # head_dim 16: the three mrope sections sum to head_dim / 2
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
}
IDS = {
    "image_token_id": IMAGE,
    "video_token_id": VIDEO,
    "vision_start_token_id": VISION_START,
    "vision_end_token_id": VISION_END,
}
Segment = int | str


@dataclass
class QwenTiny:
    family: str
    model: nn.Module
    per_image: int
    per_video: int
    build: Callable[[Sequence[Sequence[Segment]], int], dict[str, Any]]

    def prompt(self, samples: Sequence[Sequence[Segment]], seed: int = 0) -> dict[str, Any]:
        return self.build(samples, seed)


def _left_pad(rows: list[list[int]], types: list[list[int]]) -> dict[str, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    kinds = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, types, strict=True)):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
        kinds[i, width - len(r) :] = torch.tensor(t)
    return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": kinds}


def _builder(patch_dim: int, split_frames: bool) -> Callable[..., dict[str, Any]]:
    """A prompt builder; ``split_frames``: Qwen3-VL's one span per temporal patch."""
    per_frame = GRID * GRID // 4
    temporal = FRAMES // 2

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, types, images, videos = [], [], [], []
        for sample in samples:
            row: list[int] = []
            typ: list[int] = []
            for seg in sample:
                if seg == "img":
                    row += [VISION_START, *[IMAGE] * per_frame, VISION_END]
                    typ += [0, *[1] * per_frame, 0]
                    images.append(torch.randn(GRID * GRID, patch_dim, generator=gen))
                elif seg == "vid" and split_frames:
                    for _ in range(temporal):
                        stamp = torch.randint(10, 900, (TIMESTAMP,), generator=gen).tolist()
                        row += [*stamp, VISION_START, *[VIDEO] * per_frame, VISION_END]
                        typ += [0] * (TIMESTAMP + 1) + [2] * per_frame + [0]
                    videos.append(torch.randn(temporal * GRID * GRID, patch_dim, generator=gen))
                elif seg == "vid":
                    row += [VISION_START, *[VIDEO] * (per_frame * temporal), VISION_END]
                    typ += [0, *[2] * (per_frame * temporal), 0]
                    videos.append(torch.randn(temporal * GRID * GRID, patch_dim, generator=gen))
                else:
                    text = torch.randint(10, 900, (int(seg),), generator=gen).tolist()
                    row += text
                    typ += [0] * len(text)
            rows.append(row)
            types.append(typ)
        out: dict[str, Any] = _left_pad(rows, types)
        if images:
            out["pixel_values"] = torch.cat(images)
            out["image_grid_thw"] = torch.tensor([[1, GRID, GRID]] * len(images))
        if videos:
            out["pixel_values_videos"] = torch.cat(videos)
            out["video_grid_thw"] = torch.tensor([[temporal, GRID, GRID]] * len(videos))
        return out

    return build


def build_qwen2_vl(seed: int = 0) -> QwenTiny:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    text = {k: v for k, v in TEXT.items() if k != "head_dim"}
    config = Qwen2VLConfig(
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config=text,
        **IDS,
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    per = GRID * GRID // 4
    return QwenTiny("qwen2_vl", model, per, per * FRAMES // 2, _builder(3 * 2 * 14 * 14, False))


def _qwen3_vision() -> dict[str, Any]:
    return {
        "depth": len(DEEPSTACK),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 8,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": list(DEEPSTACK),
    }


def build_qwen3_vl(seed: int = 0) -> QwenTiny:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen3VLConfig(vision_config=_qwen3_vision(), text_config=dict(TEXT), **IDS)
    model = Qwen3VLForConditionalGeneration(config).eval()
    per = GRID * GRID // 4
    return QwenTiny("qwen3_vl", model, per, per * FRAMES // 2, _builder(3 * 2 * 8 * 8, True))


def build_qwen3_vl_moe(seed: int = 0) -> QwenTiny:
    """Qwen3-VL-MoE: 4 experts, top 2, every other layer sparse (layers 1, 3, 5)."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    torch.manual_seed(seed)
    text = {
        **TEXT,
        "moe_intermediate_size": 32,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 2,
    }
    config = Qwen3VLMoeConfig(vision_config=_qwen3_vision(), text_config=text, **IDS)
    model = Qwen3VLMoeForConditionalGeneration(config).eval()
    with torch.no_grad():  # the router and experts start at zero/empty: give them weights
        for layer in model.model.language_model.layers:
            experts = getattr(layer.mlp, "experts", None)
            if experts is not None:
                layer.mlp.gate.weight.normal_(0, 0.5)
                experts.gate_up_proj.normal_(0, 0.05)
                experts.down_proj.normal_(0, 0.05)
    per = GRID * GRID // 4
    return QwenTiny("qwen3_vl_moe", model, per, per * FRAMES // 2, _builder(3 * 2 * 8 * 8, True))


BUILDERS: dict[str, Callable[..., QwenTiny]] = {
    "qwen2_vl": build_qwen2_vl,
    "qwen3_vl": build_qwen3_vl,
    "qwen3_vl_moe": build_qwen3_vl_moe,
}
