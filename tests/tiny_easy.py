"""Tiny random-init VLMs of the families added for issue #20 (the "nearly exact already"
ones): LLaVA-OneVision, LLaVA-NeXT-Video, PaliGemma, Idefics3, SmolVLM and Mistral3.

Same shape as :mod:`tiny`: each builder returns a :class:`tiny.Tiny` whose ``prompt``
builds real model inputs for a list of samples, a sample being a list of segments: an int
``n`` is ``n`` text tokens, ``"img"`` one image, ``"vid"`` one video (OneVision and
NeXT-Video only). Placeholders are laid out as each family's processor lays them out (read
from its ``processing_*.py`` in transformers 5.24); visual token counts are probed from the
model's own ``get_image_features`` / ``get_video_features``. Batches are left-padded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tiny import TEXT, Segment, Tiny, _left_pad

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
IMAGE_ID, VIDEO_ID = 998, 997


def _text_ids(n: int, gen: torch.Generator) -> list[int]:
    """Random text ids clear of every special id used here (Mistral3's are 10 to 13)."""
    return torch.randint(20, 900, (n,), generator=gen).tolist()


def _features(out: Any) -> Any:
    return getattr(out, "pooler_output", out)


def _rows(
    samples: Sequence[Sequence[Segment]],
    gen: torch.Generator,
    blocks: dict[str, Callable[[], list[int]]],
) -> list[list[int]]:
    rows = []
    for sample in samples:
        row: list[int] = []
        for seg in sample:
            row += blocks[seg]() if isinstance(seg, str) else _text_ids(int(seg), gen)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- LLaVA-OneVision
def build_llava_onevision(layers: int = 6, seed: int = 0) -> Tiny:
    """Qwen2 decoder, SigLIP tower; anyres images (base + one crop + newlines) and pooled
    videos (4 frames, 2x2 each, plus one newline), as ``processing_llava_onevision.py``."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    torch.manual_seed(seed)
    size = 56
    cfg = LlavaOnevisionConfig(
        vision_config={
            **VISION,
            "model_type": "siglip_vision_model",
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 14,
        },
        text_config={**TEXT, "num_hidden_layers": layers, "model_type": "qwen2"},
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        image_grid_pinpoints=[[size, size], [size, size * 2]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    frames = 4
    image_sizes = torch.tensor([[size, size * 2]])
    with torch.no_grad():
        probe = torch.randn(1, 3, 3, size, size)
        per_image = int(_features(model.model.get_image_features(probe, image_sizes))[0].shape[0])
        video = torch.randn(1, frames, 3, size, size)
        per_video = int(_features(model.model.get_video_features(video)).shape[1])
    return Tiny(
        "llava_onevision",
        model,
        per_image,
        _llava_video_builder(per_image, per_video, size, frames, image_sizes, patches=3),
    )


def _llava_video_builder(
    per_image: int, per_video: int, size: int, frames: int, image_sizes: Tensor, *, patches: int
) -> Callable[[Sequence[Sequence[Segment]], int], dict[str, Any]]:
    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        images: list[Tensor] = []
        videos: list[Tensor] = []

        def image() -> list[int]:
            images.append(torch.randn(patches, 3, size, size, generator=gen))
            return [IMAGE_ID] * per_image

        def video() -> list[int]:
            videos.append(torch.randn(frames, 3, size, size, generator=gen))
            return [VIDEO_ID] * per_video

        out: dict[str, Any] = _left_pad(_rows(samples, gen, {"img": image, "vid": video}))
        if images:
            out["pixel_values"] = torch.stack(images)
            out["image_sizes"] = image_sizes.expand(len(images), 2).clone()
        if videos:
            out["pixel_values_videos"] = torch.stack(videos)
        return out

    return build


# --------------------------------------------------------------------------- LLaVA-NeXT-Video
def build_llava_next_video(layers: int = 6, seed: int = 0) -> Tiny:
    """Llama decoder, CLIP tower; anyres images and videos pooled by stride 2 (4 frames of
    2x2), as ``processing_llava_next_video.py``."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
    )

    torch.manual_seed(seed)
    size = 56
    cfg = LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(
            **VISION, num_attention_heads=2, image_size=size, patch_size=14
        ),
        text_config=LlamaConfig(**{**TEXT, "num_hidden_layers": layers}),
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        image_grid_pinpoints=[[size, size * 2], [size * 2, size]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        spatial_pool_stride=2,
    )
    model = LlavaNextVideoForConditionalGeneration(cfg).eval()
    frames = 4
    image_sizes = torch.tensor([[size, size * 2]])
    with torch.no_grad():
        probe = torch.randn(1, 3, 3, size, size)
        per_image = int(_features(model.model.get_image_features(probe, image_sizes))[0].shape[0])
        video = torch.randn(1, frames, 3, size, size)
        per_video = int(_features(model.model.get_video_features(video)).shape[1])
    return Tiny(
        "llava_next_video",
        model,
        per_image,
        _llava_video_builder(per_image, per_video, size, frames, image_sizes, patches=3),
    )


# --------------------------------------------------------------------------- PaliGemma
PALI_BOS, PALI_NEWLINE = 2, 108


def build_paligemma(layers: int = 6, seed: int = 0, suffix: int = 0) -> Tiny:
    """Gemma-1 decoder, SigLIP tower (16 tokens per image). As
    ``processing_paligemma.py``: ``<image>*N <bos> text \\n`` is the prefix
    (``token_type_ids`` 0: bidirectional attention); ``suffix`` further text tokens get
    type 1 (causal, as in training or a prompt that starts the answer)."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    torch.manual_seed(seed)
    size = 56
    cfg = PaliGemmaConfig(
        vision_config={
            **VISION,
            "model_type": "siglip_vision_model",
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 14,
            "projection_dim": TEXT["hidden_size"],
        },
        text_config={**TEXT, "num_hidden_layers": layers, "model_type": "gemma", "head_dim": 16},
        image_token_index=IMAGE_ID,
        projection_dim=TEXT["hidden_size"],
    )
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    per_image = (size // 14) ** 2

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, types, images = [], [], []
        for sample in samples:
            n_images = sum(seg == "img" for seg in sample)
            text_len = sum(int(seg) for seg in sample if not isinstance(seg, str))
            prefix = [IMAGE_ID] * per_image * n_images + [PALI_BOS]
            prefix += [*_text_ids(text_len, gen), PALI_NEWLINE]
            images += [torch.randn(3, size, size, generator=gen) for _ in range(n_images)]
            answer = _text_ids(suffix, gen)
            rows.append(prefix + answer)
            types.append([0] * len(prefix) + [1] * len(answer))
        out: dict[str, Any] = _left_pad(rows)
        width = out["input_ids"].shape[1]
        token_types = torch.zeros_like(out["input_ids"])
        for i, t in enumerate(types):
            token_types[i, width - len(t) :] = torch.tensor(t)
        out["token_type_ids"] = token_types
        if images:
            out["pixel_values"] = torch.stack(images)
        return out

    return Tiny("paligemma", model, per_image, build)


# --------------------------------------------------------------------------- Idefics3 / SmolVLM
FAKE, GLOBAL, ROW = 990, 991, 980  # <fake_token_around_image>, <global-img>, <row_1_col_1>


def _idefics_builder(
    per_tile: int, size: int, tiles: int
) -> Callable[[Sequence[Sequence[Segment]], int], dict[str, Any]]:
    """``processing_idefics3.py``'s split-image layout: per tile
    ``<fake><row_r_col_c><image>*N``, then ``<fake><global-img><image>*N<fake>``."""

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        per_sample: list[list[Tensor]] = []
        current: list[Tensor] = []

        def image() -> list[int]:
            row: list[int] = []
            for t in range(tiles):
                row += [FAKE, ROW + t] + [IMAGE_ID] * per_tile
            row += [FAKE, GLOBAL] + [IMAGE_ID] * per_tile + [FAKE]
            current.extend(torch.randn(3, size, size, generator=gen) for _ in range(tiles + 1))
            return row

        rows = []
        for sample in samples:
            current = []
            rows += _rows([sample], gen, {"img": image})
            per_sample.append(current)
        out: dict[str, Any] = _left_pad(rows)
        most = max(len(p) for p in per_sample)
        if most:  # padding images are all zeros (the model drops them)
            pixels = torch.zeros(len(samples), most, 3, size, size)
            for i, imgs in enumerate(per_sample):
                if imgs:
                    pixels[i, : len(imgs)] = torch.stack(imgs)
            out["pixel_values"] = pixels
        return out

    return build


def _build_idefics(family: str, layers: int, seed: int) -> Tiny:
    import transformers

    config_class, model_class = {
        "idefics3": (transformers.Idefics3Config, transformers.Idefics3ForConditionalGeneration),
        "smolvlm": (transformers.SmolVLMConfig, transformers.SmolVLMForConditionalGeneration),
    }[family]
    torch.manual_seed(seed)
    size = 112
    cfg = config_class(
        vision_config={**VISION, "num_attention_heads": 2, "image_size": size, "patch_size": 14},
        text_config={**TEXT, "num_hidden_layers": layers, "model_type": "llama"},
        image_token_id=IMAGE_ID,
        scale_factor=2,
    )
    model = model_class(cfg).eval()
    per_tile = (size // 14) ** 2 // 4
    return Tiny(family, model, per_tile, _idefics_builder(per_tile, size, tiles=2))


def build_idefics3(layers: int = 6, seed: int = 0) -> Tiny:
    """Idefics3: Llama decoder at ``model.model.text_model``; 2 tiles + a global image."""
    return _build_idefics("idefics3", layers, seed)


def build_smolvlm(layers: int = 6, seed: int = 0) -> Tiny:
    """SmolVLM: Idefics3's layout and decoder wiring (``modeling_smolvlm.py``)."""
    return _build_idefics("smolvlm", layers, seed)


# --------------------------------------------------------------------------- Mistral3
MISTRAL_IMG, MISTRAL_BREAK, MISTRAL_END = 10, 12, 13


def build_mistral3(layers: int = 6, seed: int = 0) -> Tiny:
    """Mistral decoder, Pixtral tower; a 112x112 image is 4 rows of 4 tokens, each row
    ended by ``[IMG_BREAK]`` and the last by ``[IMG_END]`` (``processing_pixtral.py``)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(seed)
    size, patch, merge = 112, 14, 2
    cfg = Mistral3Config(
        vision_config={
            **VISION,
            "model_type": "pixtral",
            "num_attention_heads": 2,
            "head_dim": 16,
            "image_size": size,
            "patch_size": patch,
        },
        text_config={
            **TEXT,
            "num_hidden_layers": layers,
            "model_type": "mistral",
            "sliding_window": None,
        },
        image_token_index=MISTRAL_IMG,
        spatial_merge_size=merge,
    )
    model = Mistral3ForConditionalGeneration(cfg).eval()
    side = size // patch // merge
    per_image = side * side

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        images: list[Tensor] = []

        def image() -> list[int]:
            images.append(torch.randn(3, size, size, generator=gen))
            rows = [[MISTRAL_IMG] * side + [MISTRAL_BREAK] for _ in range(side)]
            rows[-1][-1] = MISTRAL_END
            return [t for r in rows for t in r]

        out: dict[str, Any] = _left_pad(_rows(samples, gen, {"img": image}))
        if images:
            out["pixel_values"] = torch.stack(images)
            out["image_sizes"] = torch.tensor([[size, size]] * len(images))
        return out

    return Tiny("mistral3", model, per_image, build)


def build_pixtral_llava(layers: int = 4, seed: int = 0) -> Tiny:
    """Pixtral-12B's layout: a ``llava`` model with a Pixtral tower (no patch merge), a
    56x56 image is 4 rows of 4 ``[IMG]`` ended by ``[IMG_BREAK]`` / ``[IMG_END]``."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    size, patch = 56, 14
    cfg = LlavaConfig(
        vision_config={
            **VISION,
            "model_type": "pixtral",
            "num_attention_heads": 2,
            "head_dim": 16,
            "image_size": size,
            "patch_size": patch,
        },
        text_config={
            **TEXT,
            "num_hidden_layers": layers,
            "model_type": "mistral",
            "sliding_window": None,
        },
        image_token_id=MISTRAL_IMG,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = LlavaForConditionalGeneration(cfg).eval()
    side = size // patch

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        images: list[Tensor] = []

        def image() -> list[int]:
            images.append(torch.randn(3, size, size, generator=gen))
            rows = [[MISTRAL_IMG] * side + [MISTRAL_BREAK] for _ in range(side)]
            rows[-1][-1] = MISTRAL_END
            return [t for r in rows for t in r]

        out: dict[str, Any] = _left_pad(_rows(samples, gen, {"img": image}))
        if images:
            out["pixel_values"] = torch.stack(images)
            out["image_sizes"] = torch.tensor([[size, size]] * len(images))
        return out

    return Tiny("pixtral_llava", model, side * side, build)


BUILDERS: dict[str, Callable[..., Tiny]] = {
    "llava_onevision": build_llava_onevision,
    "llava_next_video": build_llava_next_video,
    "paligemma": build_paligemma,
    "idefics3": build_idefics3,
    "smolvlm": build_smolvlm,
    "mistral3": build_mistral3,
}
