"""Tiny random models and toy input builders of the families beyond the trained zoo.

``halfv profile --model F`` (tiny-random source) for the families added in issue #20:
LLaVA-OneVision, LLaVA-NeXT-Video, PaliGemma, Idefics3, SmolVLM and Mistral3. Each is
built from a config (hidden 256, the family's real layer classes, a small random vision
tower) and comes with a :class:`~halfv.profile.sources.ToyProcessor` subclass that lays
an image out as the family's processor does (``transformers/models/<family>/
processing_*.py``, 5.24): anyres crops (base + one) with newline rows for the LLaVA
variants, PaliGemma's bidirectional prefix (``token_type_ids`` 0 over the whole prompt),
the fake-token frame of Idefics3/SmolVLM, and Mistral3's rows ended by ``[IMG_BREAK]``
and ``[IMG_END]`` (the tekken ids 12 and 13, with ``[IMG]`` = 10, so the adapter's span
joiner applies). The image sits where the toy chat template puts it (after ``USER:``).
These families have no trained zoo checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from halfv.errors import HalfvValueError
from halfv.profile.sources import _END, _IMAGE, _START, _VISION, ToyProcessor

__all__ = ["MORE_FAMILIES", "NAMES", "LayoutProcessor", "build_more"]

MORE_FAMILIES: tuple[str, ...] = (
    "llava_onevision",
    "llava_next_video",
    "paligemma",
    "idefics3",
    "smolvlm",
    "mistral3",
)
"""Families ``halfv profile`` builds tiny random models of, beyond the trained zoo's."""

NAMES = {
    "llava_onevision": "LLaVA-OneVision",
    "llava_next_video": "LLaVA-NeXT-Video",
    "paligemma": "PaliGemma",
    "idefics3": "Idefics3",
    "smolvlm": "SmolVLM",
    "mistral3": "Mistral3",
}
_MISTRAL_IMG, _MISTRAL_BREAK, _MISTRAL_END = 10, 12, 13  # tekken special-token ids


class LayoutProcessor(ToyProcessor):
    """A :class:`ToyProcessor` with a family's own image block and visual tensors."""

    def __init__(
        self, family: str, image_size: int, block: list[int], visual: dict[str, Tensor]
    ) -> None:
        self.family = family
        self.image_size = image_size
        self.image_block = block
        self.visual = visual  # extra tensors, with ``pixel_values`` replaced per image

    def visual_inputs(self, pixels: Tensor, input_ids: Tensor) -> dict[str, Tensor]:
        """The family's visual tensors for one image ``[3, H, W]``."""
        out = dict(self.visual)
        if self.family in ("llava_onevision", "llava_next_video"):
            out["pixel_values"] = pixels.expand(2, -1, -1, -1).unsqueeze(0)  # base + 1 crop
        elif self.family in ("idefics3", "smolvlm"):
            out["pixel_values"] = pixels[None, None]
        else:
            out["pixel_values"] = pixels.unsqueeze(0)
        if self.family == "paligemma":  # the whole prompt is the bidirectional prefix
            out["token_type_ids"] = torch.zeros_like(input_ids)
        return out


def _vision(model_type: str, size: int, **extra: Any) -> dict[str, Any]:
    return {
        **_VISION,
        "model_type": model_type,
        "num_hidden_layers": 2,
        "image_size": size,
        "patch_size": 14,
        **extra,
    }


def build_more(family: str, text: dict[str, Any]) -> tuple[nn.Module, LayoutProcessor]:
    """A tiny random model of ``family`` (one of :data:`MORE_FAMILIES`) and its builder.

    ``text`` is the text config (hidden 256, the layer count chosen by the caller).
    """
    import transformers

    tf: Any = transformers  # config signatures do not type-check **kwargs
    visual: dict[str, Tensor] = {}
    if family in ("llava_onevision", "llava_next_video"):
        size = 224  # base + one crop of 256 patches each, plus newline rows
        onevision = family == "llava_onevision"
        config_class, model_class, vision_type, decoder = (
            (
                tf.LlavaOnevisionConfig,
                tf.LlavaOnevisionForConditionalGeneration,
                "siglip_vision_model",
                "qwen2",
            )
            if onevision
            else (
                tf.LlavaNextVideoConfig,
                tf.LlavaNextVideoForConditionalGeneration,
                "clip_vision_model",
                "llama",
            )
        )
        config = config_class(
            vision_config=_vision(vision_type, size),
            text_config={**text, "model_type": decoder},
            image_token_index=_IMAGE,
            video_token_index=_IMAGE + 3,
            image_grid_pinpoints=[[size, size]],
            vision_feature_layer=-1,
            vision_feature_select_strategy="full" if onevision else "default",
        )
        model = model_class(config)
        visual["image_sizes"] = torch.tensor([[size, size]])
        with torch.no_grad():
            probe = torch.zeros(1, 2, 3, size, size)
            features = model.model.get_image_features(probe, visual["image_sizes"])
        n = int(getattr(features, "pooler_output", features)[0].shape[0])
        block = [_IMAGE] * n
    elif family == "paligemma":
        size = 336
        hidden = text["hidden_size"]
        config = tf.PaliGemmaConfig(
            vision_config=_vision("siglip_vision_model", size, projection_dim=hidden),
            text_config={**text, "model_type": "gemma", "head_dim": hidden // 4},
            image_token_index=_IMAGE,
            projection_dim=hidden,
        )
        model = tf.PaliGemmaForConditionalGeneration(config)
        block = [_IMAGE] * (size // 14) ** 2
    elif family in ("idefics3", "smolvlm"):
        size = 672  # one unsplit image: (672 / 14)^2 / 2^2 = 576 tokens
        prefix = "Idefics3" if family == "idefics3" else "SmolVLM"
        config = getattr(tf, f"{prefix}Config")(
            vision_config=_vision(f"{family}_vision", size),
            text_config={**text, "model_type": "llama"},
            image_token_id=_IMAGE,
            scale_factor=2,
        )
        model = getattr(tf, f"{prefix}ForConditionalGeneration")(config)
        block = [_START, _END, *[_IMAGE] * 576, _START]  # <fake><global-img>...<fake>
    elif family == "mistral3":
        size, side = 672, 672 // 28  # 24 rows of 24 tokens (patch 14, merge 2)
        config = tf.Mistral3Config(
            vision_config=_vision("pixtral", size, head_dim=_VISION["hidden_size"] // 2),
            text_config={**text, "model_type": "mistral", "sliding_window": None},
            image_token_index=_MISTRAL_IMG,
        )
        model = tf.Mistral3ForConditionalGeneration(config)
        rows = [[_MISTRAL_IMG] * side + [_MISTRAL_BREAK] for _ in range(side)]
        rows[-1][-1] = _MISTRAL_END
        block = [t for row in rows for t in row]
        visual["image_sizes"] = torch.tensor([[size, size]])
    else:
        msg = f"no tiny model for family {family!r}: use one of {', '.join(MORE_FAMILIES)}"
        raise HalfvValueError(msg)
    return model, LayoutProcessor(family, size, block, visual)
