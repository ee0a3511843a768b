"""Three small VLM families built around the real SmolLM2-135M-Instruct language model.

Every family keeps SmolLM2's 30 decoder layers (hidden 576, 9 heads / 3 KV heads, head_dim
64, rope_theta 1e5, tied embeddings) as its language model and adds a small, randomly
initialised vision tower and projector that :mod:`halfv_lab.zoo.training` trains. Each image
becomes 576 visual tokens:

=============  =======================================  ======  ==========================
family         vision tower                              pixels  image tokens
=============  =======================================  ======  ==========================
``llava``      CLIP ViT, patch 14, + 2-layer MLP         336     ``<image>`` x 576
``internvl``   InternViT, patch 14, pixel shuffle 0.5    672     ``<img>`` + 576 + ``</img>``
``qwen2_5_vl`` Qwen2.5-VL ViT, patch 14, 2x2 merger      672     vision_start + 576 + end
=============  =======================================  ======  ==========================

InternVL takes SmolLM2 as a ``llama`` text model (``InternVLConfig`` builds its text config
through ``AutoConfig``, checked on transformers 5.17, 5.23 and 5.24). Qwen2.5-VL's text model is
its own class: SmolLM2's weights are copied in with zero q/k/v biases and
``mrope_section=[8, 12, 12]`` (sums to head_dim / 2), so on text-only input it reproduces
SmolLM2's logits. New token embeddings are set to the mean of SmolLM2's embeddings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from halfv_lab.zoo.patch_embed import use_linear_patch_embed
from halfv_lab.zoo.processing import ImageLayout, VQAProcessor

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "FAMILIES",
    "VISUAL_TOKENS",
    "VisionSize",
    "build_family",
    "build_internvl",
    "build_llava",
    "build_qwen2_5_vl",
    "trained_prefixes",
]

FAMILIES: tuple[str, ...] = ("llava", "internvl", "qwen2_5_vl")
"""Names accepted by :func:`build_family` and :func:`halfv_lab.zoo.load_trained`."""
VISUAL_TOKENS = 576
"""Visual tokens per image in every family."""

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PATCH = 14

_TRAINED_PREFIXES: dict[str, tuple[str, ...]] = {
    "llava": ("model.vision_tower.", "model.multi_modal_projector."),
    "internvl": ("model.vision_tower.", "model.multi_modal_projector."),
    "qwen2_5_vl": ("model.visual.",),
}


@dataclass(frozen=True)
class VisionSize:
    """Size of the randomly initialised vision tower (shared by the three families).

    Attributes:
        hidden_size: ViT width.
        num_layers: ViT depth.
        num_heads: attention heads per ViT layer.
        intermediate_size: MLP width of each ViT layer.
        qwen_window_size: Qwen2.5-VL's window-attention size in pixels (a multiple of 28).
            112 (as in the released models) makes 36 windows per 672-px image; 336 makes 4,
            which trains about 4x fewer attention calls per image on a GPU.
    """

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    qwen_window_size: int = 112

    def __post_init__(self) -> None:
        if self.qwen_window_size <= 0 or self.qwen_window_size % (2 * _PATCH):
            msg = f"qwen_window_size must be a positive multiple of 28, got {self.qwen_window_size}"
            raise ValueError(msg)

    def to_dict(self) -> dict[str, int]:
        """Plain-dict form, as stored in a checkpoint's ``config.json``."""
        return asdict(self)


def trained_prefixes(family: str) -> tuple[str, ...]:
    """State-dict prefixes of the trained (non-LM) parts of ``family``."""
    _check_family(family)
    return _TRAINED_PREFIXES[family]


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        msg = f"unknown zoo family {family!r}; choose one of {', '.join(FAMILIES)}"
        raise ValueError(msg)


def _text_kwargs(lm: LlamaForCausalLM, vocab_size: int) -> dict[str, Any]:
    """SmolLM2's text hyper-parameters, with the vocabulary grown to ``vocab_size``."""
    c = lm.config
    return {
        "vocab_size": vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "hidden_act": c.hidden_act,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": True,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "pad_token_id": c.pad_token_id,
    }


def _rope_theta(lm: LlamaForCausalLM) -> float:
    params = getattr(lm.config, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(lm.config, "rope_theta", None))
    if theta is None:
        msg = "the language model config has no rope_theta; pass SmolLM2 from load_smollm2()"
        raise ValueError(msg)
    return float(theta)


def _extend_tokenizer(
    tokenizer: PreTrainedTokenizerBase, tokens: list[str], base_vocab: int
) -> tuple[PreTrainedTokenizerBase, list[int]]:
    """Copy ``tokenizer`` and append ``tokens`` as special tokens with ids from base_vocab."""
    tok = copy.deepcopy(tokenizer)
    tok.add_tokens(tokens, special_tokens=True)
    ids = [tok.convert_tokens_to_ids(t) for t in tokens]
    expected = list(range(base_vocab, base_vocab + len(tokens)))
    if ids != expected:
        msg = (
            f"adding {tokens} gave ids {ids}, expected {expected}: pass SmolLM2's own "
            "tokenizer (from load_smollm2()) without extra added tokens"
        )
        raise ValueError(msg)
    tok.padding_side = "left"
    return tok, expected


@torch.no_grad()
def _copy_lm(model: PreTrainedModel, lm: LlamaForCausalLM) -> None:
    """Copy SmolLM2's weights into ``model``'s text model; new embedding rows get the mean."""
    src = lm.state_dict()
    dst = model.state_dict()
    text_prefix = "model.language_model."
    for key, value in src.items():
        if key == "lm_head.weight":
            continue  # tied to the embeddings
        target = text_prefix + key.removeprefix("model.")
        if target not in dst:
            msg = f"{type(model).__name__} has no parameter {target!r} for SmolLM2's {key!r}"
            raise KeyError(msg)
        if key.endswith("embed_tokens.weight"):
            emb = dst[target]
            emb[: value.shape[0]].copy_(value)
            emb[value.shape[0] :] = value.float().mean(0).to(emb.dtype)
        else:
            dst[target].copy_(value)
    for key, value in dst.items():  # Qwen2.5-VL's q/k/v biases
        if key.startswith(text_prefix) and key.endswith("_proj.bias"):
            value.zero_()
    vlm: Any = model  # transformers' annotations do not type-check these calls
    out_emb, in_emb = vlm.get_output_embeddings(), vlm.get_input_embeddings()
    if out_emb is None or out_emb.weight.data_ptr() != in_emb.weight.data_ptr():
        msg = f"{type(model).__name__}: lm_head is not tied to the input embeddings"
        raise RuntimeError(msg)


def _finish(model: PreTrainedModel, lm: LlamaForCausalLM, eos: int) -> PreTrainedModel:
    _copy_lm(model, lm)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.bos_token_id = lm.config.bos_token_id
    model.eval()
    return model


def build_llava(
    lm: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
    vision: VisionSize | None = None,
) -> tuple[PreTrainedModel, VQAProcessor]:
    """LLaVA: CLIP ViT (336 px, patch 14 -> 576 tokens) + MLP projector + SmolLM2.

    Args:
        lm: SmolLM2 from :func:`halfv_lab.zoo.load_smollm2` (not modified; its weights are copied).
        tokenizer: SmolLM2's tokenizer (not modified; a copy gets ``<image>`` = 49152).
        seed: seed of the random vision tower and projector.
        vision: vision tower size (default :class:`VisionSize`).

    Returns:
        ``(LlavaForConditionalGeneration, processor)`` in eval mode, float32.
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    v = vision or VisionSize()
    base = lm.config.vocab_size
    tok, (image_id,) = _extend_tokenizer(tokenizer, ["<image>"], base)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=v.hidden_size,
            intermediate_size=v.intermediate_size,
            num_hidden_layers=v.num_layers,
            num_attention_heads=v.num_heads,
            image_size=336,
            patch_size=_PATCH,
        ),
        text_config=LlamaConfig(
            **_text_kwargs(lm, base + 1),
            rope_parameters={"rope_type": "default", "rope_theta": _rope_theta(lm)},
        ),
        image_token_index=image_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaForConditionalGeneration(config), lm, tok.eos_token_id)
    layout = ImageLayout(size=336, mean=_CLIP_MEAN, std=_CLIP_STD)
    proc = VQAProcessor("llava", tok, layout, [image_id] * VISUAL_TOKENS, image_id)
    return model, proc


def build_internvl(
    lm: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
    vision: VisionSize | None = None,
) -> tuple[PreTrainedModel, VQAProcessor]:
    """InternVL: InternViT (672 px, patch 14, pixel shuffle 0.5 -> 576 tokens) + SmolLM2.

    Tokens ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` get ids 49152..49154; the image token
    is ``<IMG_CONTEXT>``. Arguments and return value as in :func:`build_llava`.
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    v = vision or VisionSize()
    base = lm.config.vocab_size
    tok, (start_id, end_id, ctx_id) = _extend_tokenizer(
        tokenizer, ["<img>", "</img>", "<IMG_CONTEXT>"], base
    )
    text = _text_kwargs(lm, base + 3)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": _rope_theta(lm)}
    config = InternVLConfig(
        vision_config={
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_layers,
            "num_attention_heads": v.num_heads,
            "image_size": [672, 672],
            "patch_size": [_PATCH, _PATCH],
        },
        text_config={"model_type": "llama", **text},
        image_token_id=ctx_id,
        image_seq_length=VISUAL_TOKENS,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = _finish(InternVLForConditionalGeneration(config), lm, tok.eos_token_id)
    layout = ImageLayout(size=672, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
    block = [start_id, *([ctx_id] * VISUAL_TOKENS), end_id]
    return model, VQAProcessor("internvl", tok, layout, block, ctx_id)


def build_qwen2_5_vl(
    lm: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
    vision: VisionSize | None = None,
) -> tuple[PreTrainedModel, VQAProcessor]:
    """Qwen2.5-VL: its ViT (672 px -> 48 x 48 patches -> 2 x 2 merger -> 576) + SmolLM2.

    Tokens ``<|vision_start|>``, ``<|image_pad|>``, ``<|vision_end|>``, ``<|video_pad|>``
    get ids 49152..49155 (the video token is unused but gives ``video_token_id`` an id of
    its own). The text model is Qwen2.5-VL's, loaded with SmolLM2's weights and zero q/k/v
    biases. Arguments and return value as in :func:`build_llava`.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    v = vision or VisionSize()
    base = lm.config.vocab_size
    names = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tok, (start_id, pad_id, end_id, video_id) = _extend_tokenizer(tokenizer, names, base)
    head_dim = lm.config.hidden_size // lm.config.num_attention_heads
    section = [
        head_dim // 8,
        3 * head_dim // 16,
        head_dim // 2 - head_dim // 8 - 3 * head_dim // 16,
    ]
    text = _text_kwargs(lm, base + len(names))
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": _rope_theta(lm),
        "mrope_section": section,
    }
    text["use_sliding_window"] = False
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            "depth": v.num_layers,
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads,
            "out_hidden_size": lm.config.hidden_size,
            "patch_size": _PATCH,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": v.qwen_window_size,
            "fullatt_block_indexes": list(range(1, v.num_layers, 2)),
        },
        image_token_id=pad_id,
        video_token_id=video_id,
        vision_start_token_id=start_id,
        vision_end_token_id=end_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = _finish(Qwen2_5_VLForConditionalGeneration(config), lm, tok.eos_token_id)
    use_linear_patch_embed(model)  # the same map as its Conv3d, without cuDNN's slow path
    layout = ImageLayout(size=672, mean=_CLIP_MEAN, std=_CLIP_STD, qwen_patch=_PATCH)
    block = [start_id, *([pad_id] * VISUAL_TOKENS), end_id]
    proc = VQAProcessor("qwen2_5_vl", tok, layout, block, pad_id, mm_token_type_ids=True)
    return model, proc


_BUILDERS: dict[str, Callable[..., tuple[PreTrainedModel, VQAProcessor]]] = {
    "llava": build_llava,
    "internvl": build_internvl,
    "qwen2_5_vl": build_qwen2_5_vl,
}


def build_family(
    family: str,
    lm: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
    vision: VisionSize | None = None,
) -> tuple[PreTrainedModel, VQAProcessor]:
    """Build ``family`` (one of :data:`FAMILIES`) with a random vision tower; see build_*."""
    _check_family(family)
    return _BUILDERS[family](lm, tokenizer, seed, vision)
