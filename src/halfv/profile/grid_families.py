"""Tiny random Qwen2-VL, Qwen3-VL(-MoE), Qwen3.5, GLM-4.1V and Gemma 3 for ``halfv profile``.

The built-in backbone families beyond :mod:`halfv.profile.more_families`, each built from
a config (text hidden 256, head dim 64, the family's real layer classes, a 2-layer vision
tower) with 576 visual tokens per image, laid out as the family's processor does
(transformers 5.24):

* Qwen2-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5 (``processing_qwen2_vl.py``,
  ``processing_qwen3_vl.py``): ``<vision_start> <image_pad> * N <vision_end>``, the pixels
  as flattened ``(C, T, p, p)`` patches in merge order, ``image_grid_thw`` and
  ``mm_token_type_ids`` (1 on the image tokens, which multimodal RoPE needs);
* GLM-4.1V (``processing_glm4v.py``): ``<|begin_of_image|> <|image|> * N
  <|end_of_image|>``, the same patch tensors;
* Gemma 3 (``processing_gemma3.py``): ``<start_of_image> <image_soft_token> * N
  <end_of_image>``, ``token_type_ids`` 1 on the image tokens (bidirectional inside the
  image in prefill), sliding-window layers 5 : 1 with a window (512) shorter than a prompt.

Each keeps the family's own text features: multimodal RoPE sections summing to the rotary
half (Qwen3-VL's DeepStack features added after the first text layers, Qwen3.5's
alternating Gated-DeltaNet and full-attention layers (1 : 1) with partial rotary, GLM's partial
interleaved rotary), and weights that transformers leaves at zero (Qwen3-VL-MoE experts
and router, Gemma 3's projector) are drawn at random so every part matters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from halfv.errors import HalfvValueError
from halfv.profile.sources import _END, _IMAGE, _START, _VIDEO, ToyProcessor, _qwen_patches

__all__ = ["GRID_FAMILIES", "GRID_NAMES", "GridProcessor", "build_grid"]

GRID_FAMILIES: tuple[str, ...] = (
    "qwen2_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "qwen3_5",
    "glm4v",
    "gemma3",
)
"""Families :func:`build_grid` builds."""

GRID_NAMES = {
    "qwen2_vl": "Qwen2-VL",
    "qwen3_vl": "Qwen3-VL",
    "qwen3_vl_moe": "Qwen3-VL-MoE",
    "qwen3_5": "Qwen3.5",
    "glm4v": "GLM-4.1V",
    "gemma3": "Gemma 3",
}
_TOKENS = 576  # visual tokens per image: a 48 x 48 patch grid merged (or pooled) 2 x 2
_SIDE = 48  # patches per side
_HEAD = 64  # text head dim (hidden 256 / 4 heads)
_VIDEO_START, _VIDEO_END = _VIDEO + 1, _VIDEO + 2  # GLM's video markers (unused by images)
_GEMMA_WINDOW = 512


class GridProcessor(ToyProcessor):
    """A :class:`ToyProcessor` with a grid family's image block and visual tensors.

    Args:
        family: one of :data:`GRID_FAMILIES`.
        patch: the vision tower's patch side (pixels).
    """

    def __init__(self, family: str, patch: int) -> None:
        self.family = family
        self.patch = patch
        self.image_size = _SIDE * patch
        self.image_block = [_START, *[_IMAGE] * _TOKENS, _END]

    def visual_inputs(self, pixels: Tensor, input_ids: Tensor) -> dict[str, Tensor]:
        """The family's visual tensors for one image ``[3, H, W]``."""
        image = (input_ids == _IMAGE).long()
        if self.family == "gemma3":
            return {"pixel_values": pixels.unsqueeze(0), "token_type_ids": image}
        return {
            "pixel_values": _qwen_patches(pixels, patch=self.patch),
            "image_grid_thw": torch.tensor([[1, _SIDE, _SIDE]]),
            "mm_token_type_ids": image,
        }


def _rope(sections: list[int], **extra: Any) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": 1e4, "mrope_section": sections, **extra}


def _qwen_vision(patch: int, out: int, **extra: Any) -> dict[str, Any]:
    return {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "out_hidden_size": out,
        "patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        **extra,
    }


_QWEN_IDS = {
    "image_token_id": _IMAGE,
    "video_token_id": _VIDEO,
    "vision_start_token_id": _START,
    "vision_end_token_id": _END,
}


def _randomise(module: nn.Module, family: str) -> None:
    """Draw the weights transformers initialises to zero, so they take part."""
    model: Any = module  # the submodule paths are the family's, not nn.Module's
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if family == "qwen3_vl_moe":  # router and experts start at zero/empty
            for layer in model.model.language_model.layers:
                experts = getattr(layer.mlp, "experts", None)
                if experts is not None:
                    layer.mlp.gate.weight.normal_(0, 0.5, generator=gen)
                    experts.gate_up_proj.normal_(0, 0.05, generator=gen)
                    experts.down_proj.normal_(0, 0.05, generator=gen)
        elif family == "gemma3":  # the projector starts at zero: images would be blank
            weight = model.model.multi_modal_projector.mm_input_projection_weight
            weight.normal_(0, float(weight.shape[0]) ** -0.5, generator=gen)


def build_grid(family: str, text: dict[str, Any]) -> tuple[nn.Module, GridProcessor]:
    """A tiny random model of ``family`` (one of :data:`GRID_FAMILIES`) and its builder.

    ``text`` is the text config (hidden 256, 4 heads, the layer count chosen by the caller).
    """
    import transformers

    tf: Any = transformers  # config signatures do not type-check **kwargs
    hidden = text["hidden_size"]
    base = {**text, "head_dim": _HEAD}
    if family == "qwen2_vl":
        patch = 14
        vision = {
            "depth": 2,
            "embed_dim": 64,
            "hidden_size": hidden,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        config = tf.Qwen2VLConfig(
            vision_config=vision,
            text_config={**text, "rope_parameters": _rope([8, 12, 12])},
            **_QWEN_IDS,
        )
        model = tf.Qwen2VLForConditionalGeneration(config)
    elif family in ("qwen3_vl", "qwen3_vl_moe"):
        patch = 16
        vision = _qwen_vision(
            patch, hidden, num_position_embeddings=_SIDE * _SIDE, deepstack_visual_indexes=[0, 1]
        )
        text_config = {**base, "rope_parameters": _rope([8, 12, 12], mrope_interleaved=True)}
        prefix = "Qwen3VL"
        if family == "qwen3_vl_moe":
            prefix = "Qwen3VLMoe"
            text_config.update(
                moe_intermediate_size=128,
                num_experts=4,
                num_experts_per_tok=2,
                decoder_sparse_step=2,
            )
        config = getattr(tf, f"{prefix}Config")(
            vision_config=vision, text_config=text_config, **_QWEN_IDS
        )
        model = getattr(tf, f"{prefix}ForConditionalGeneration")(config)
    elif family == "qwen3_5":
        patch = 16
        text_config = {
            **base,
            "linear_key_head_dim": 32,
            "linear_value_head_dim": 32,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            # 1 linear : 1 full (the released models: 3 : 1), so that a 3-layer model
            # has an attention layer to score at
            "full_attention_interval": 2,
            # partial rotary 0.25 of head dim 64: sections sum to 8
            "rope_parameters": _rope([3, 3, 2], mrope_interleaved=True, partial_rotary_factor=0.25),
        }
        config = tf.Qwen3_5Config(
            vision_config=_qwen_vision(patch, hidden, num_position_embeddings=_SIDE * _SIDE),
            text_config=text_config,
            **_QWEN_IDS,
        )
        model = tf.Qwen3_5ForConditionalGeneration(config)
    elif family == "glm4v":
        patch = 14
        config = tf.Glm4vConfig(
            vision_config=_qwen_vision(patch, hidden, image_size=_SIDE * patch),
            # partial rotary 0.5 of head dim 64: sections sum to 16
            text_config={**base, "rope_parameters": _rope([8, 4, 4], partial_rotary_factor=0.5)},
            image_token_id=_IMAGE,
            video_token_id=_VIDEO,
            image_start_token_id=_START,
            image_end_token_id=_END,
            video_start_token_id=_VIDEO_START,
            video_end_token_id=_VIDEO_END,
        )
        model = tf.Glm4vForConditionalGeneration(config)
    elif family == "gemma3":
        patch = 14
        config = tf.Gemma3Config(
            text_config={
                **base,
                "query_pre_attn_scalar": _HEAD,
                "sliding_window": _GEMMA_WINDOW,
                "layer_types": [
                    "full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                    for i in range(text["num_hidden_layers"])
                ],
            },
            vision_config={
                "model_type": "siglip_vision_model",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": _SIDE * patch,
                "patch_size": patch,
            },
            mm_tokens_per_image=_TOKENS,
            image_token_index=_IMAGE,
            boi_token_index=_START,
            eoi_token_index=_END,
        )
        model = tf.Gemma3ForConditionalGeneration(config)
    else:
        msg = f"no tiny model for family {family!r}: use one of {', '.join(GRID_FAMILIES)}"
        raise HalfvValueError(msg)
    _randomise(model, family)
    return model, GridProcessor(family, patch)
