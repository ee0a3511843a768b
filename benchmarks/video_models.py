"""Models, processor sizes and prompts of ``bench_video.py`` (video and new backbones).

* Real configs written out in code (no downloads): Qwen2.5-VL-7B (``bench_cpu``'s),
  Qwen3-VL-8B and Gemma-3-12B, with tiny variants of each for ``--cpu-smoke``; built on
  the meta device, then filled with random weights on the target device.
* Video sizes through the real Qwen2.5-VL / Qwen3-VL video processor resize rules: the
  ``smart_resize`` functions are read from transformers' own source files (their modules
  import torchvision, so they are compiled alone from the file, not imported) and the
  per-frame cap of ``cap_pixels_per_frame=True`` (qwen-vl-utils' behaviour) is applied as
  the processors' ``resize`` methods do.
* Prompts with each family's placeholders: a Qwen2.5-VL video is one run of
  ``t * h * w / 4`` video tokens; a Qwen3-VL video is, per temporal patch, a timestamp
  (``<12.5 seconds>``: 8 text tokens here) then ``<vision_start> <video_pad> * h*w/4
  <vision_end>``; a Gemma 3 image is ``<start_of_image>`` + 256 image tokens +
  ``<end_of_image>`` with ``token_type_ids`` 1 on the image tokens.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_cpu as bc
import torch
from torch import Tensor

__all__ = [
    "MODEL_KIND",
    "VideoRule",
    "build",
    "image_prompt",
    "model_config",
    "transformers_function",
    "video_prompt",
    "video_rule",
]

#: benchmark name -> transformers ``model_type``
MODEL_KIND = {"qwen2.5-vl-7b": "qwen2_5_vl", "qwen3-vl-8b": "qwen3_vl", "gemma-3-12b": "gemma3"}
TIMESTAMP_TOKENS = 8  # "<12.5 seconds>" in the Qwen tokenizer, about
TEXT_ID = 13


def transformers_function(relpath: str, name: str) -> Callable[..., Any]:
    """Top-level function ``name`` of transformers' ``relpath``, compiled from the installed
    source file alone (so modules that import torchvision still give their maths)."""
    spec = importlib.util.find_spec("transformers")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict[str, Any] = {"math": math}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace[name]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class VideoRule:
    """A video processor's settings (transformers 5.24 names) and its resize rule."""

    family: str  # "qwen2_5_vl" | "qwen3_vl"
    patch: int
    merge: int
    temporal: int
    shortest: int  # size["shortest_edge"] (min pixels)
    longest: int  # size["longest_edge"] (max pixels)
    max_video_tokens: int  # the class attribute the per-frame cap reads

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``video_grid_thw`` of ``frames`` sampled frames of ``height x width`` pixels, as
        ``_preprocess`` builds it with ``cap_pixels_per_frame=True``."""
        factor = self.patch * self.merge
        if self.family == "qwen2_5_vl":  # Qwen2VLVideoProcessor.resize
            resize = transformers_function(
                "models/qwen2_vl/video_processing_qwen2_vl.py", "smart_resize"
            )
            total = int(self.max_video_tokens * factor * factor * 0.9)
            cap = max(min(self.longest, total * self.temporal // frames), int(self.shortest * 1.05))
            h, w = resize(height, width, factor=factor, min_pixels=self.shortest, max_pixels=cap)
        else:  # Qwen3VLVideoProcessor.resize
            resize = transformers_function(
                "models/qwen3_vl/video_processing_qwen3_vl.py", "smart_resize"
            )
            frame_cap = self.max_video_tokens * factor * factor
            per = max(min(frame_cap, self.longest // frames), int(self.shortest * 1.05))
            h, w = resize(
                num_frames=frames, height=height, width=width, temporal_factor=self.temporal,
                factor=factor, min_pixels=self.shortest, max_pixels=per * frames,
            )  # fmt: skip
        padded = frames + (-frames % self.temporal)  # patchify repeats the last frame
        return padded // self.temporal, h // self.patch, w // self.patch


def video_rule(
    family: str, *, tiny: bool = False, qwen3_size: tuple[int, int] | None = None
) -> VideoRule:
    """The video processor settings of a family.

    Qwen2.5-VL: ``Qwen2VLVideoProcessor``'s defaults (min 128*28*28, max 768*28*28 pixels
    per frame: qwen-vl-utils' VIDEO_MIN/MAX_PIXELS). Qwen3-VL-8B-Instruct: its
    ``video_preprocessor_config.json`` (size shortest 4096, longest 25165824 = 768 tokens
    * 32 frames; override with ``qwen3_size``) and ``Qwen3VLVideoProcessor``'s
    ``max_video_tokens=768``. ``tiny``: small limits for the CPU smoke run.
    """
    if family == "qwen2_5_vl":
        longest = 28 * 28 * 8 if tiny else 28 * 28 * 768
        return VideoRule(family, 14, 2, 2, 56 * 56 if tiny else 128 * 28 * 28, longest, 128000)
    shortest, longest = qwen3_size or (4096, 25165824)
    if tiny:
        return VideoRule(family, 8, 2, 2, 16 * 16, 16 * 16 * 8 * 4, 8)
    return VideoRule(family, 16, 2, 2, shortest, longest, 768)


# ----------------------------------------------------------------------------- models
def model_config(kind: str, *, tiny: bool) -> Any:
    """The transformers config of a family at real size (or tiny)."""
    import transformers as tf

    if kind == "qwen2_5_vl":
        return bc.model_config(kind, bc.TEXT_DIMS["tiny"] if tiny else None)
    if kind == "qwen3_vl":  # Qwen/Qwen3-VL-8B-Instruct config.json, written out
        text: dict[str, Any]
        text = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                "vocab_size": 1000} if tiny else {
                "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                "vocab_size": 151936}  # fmt: skip
        mrope = [2, 3, 3] if tiny else [24, 20, 20]
        text |= {"max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
                 "bos_token_id": 151643, "eos_token_id": 151645, "tie_word_embeddings": False,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 5e6,
                                     "mrope_section": mrope,
                                     "mrope_interleaved": True}}  # fmt: skip
        if tiny:
            text |= {"bos_token_id": 1, "eos_token_id": 2}
        vision: dict[str, Any]
        vision = {"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "patch_size": 8, "out_hidden_size": 64, "num_position_embeddings": 64,
                  "deepstack_visual_indexes": [0, 1, 2]} if tiny else {
                  "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                  "patch_size": 16, "out_hidden_size": 4096, "num_position_embeddings": 2304,
                  "deepstack_visual_indexes": [8, 16, 24]}  # fmt: skip
        vision |= {"spatial_merge_size": 2, "temporal_patch_size": 2,
                   "hidden_act": "gelu_pytorch_tanh"}  # fmt: skip
        ids = bc.TINY_IDS if tiny else (151655, 151656, 151652, 151653)
        return tf.Qwen3VLConfig(
            vision_config=vision, text_config=text, image_token_id=ids[0], video_token_id=ids[1],
            vision_start_token_id=ids[2], vision_end_token_id=ids[3], tie_word_embeddings=False,
        )  # fmt: skip
    # google/gemma-3-12b-it config.json, written out (5 local : 1 global layers)
    text = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "query_pre_attn_scalar": 16, "sliding_window": 16, "vocab_size": 1000} if tiny else {
            "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
            "query_pre_attn_scalar": 256, "sliding_window": 1024, "vocab_size": 262208}  # fmt: skip
    text |= {"rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 64, "patch_size": 8} if tiny else {
              "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
              "num_attention_heads": 16, "image_size": 896, "patch_size": 14}  # fmt: skip
    vision |= {"model_type": "siglip_vision_model", "vision_use_head": False}
    gemma_ids = (
        (bc.TINY_IDS[0], bc.TINY_IDS[2], bc.TINY_IDS[3]) if tiny else (262144, 255999, 256000)
    )
    return tf.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=16 if tiny else 256,
        image_token_index=gemma_ids[0], boi_token_index=gemma_ids[1], eoi_token_index=gemma_ids[2],
    )  # fmt: skip


@torch.no_grad()
def build(config: Any, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """Build on meta, move with ``to_empty``, fill: N(0, 0.02), biases 0, norms identity
    (weight 1; Gemma's ``1 + weight`` norms 0)."""
    import transformers as tf

    name = {"qwen2_5_vl": "Qwen2_5_VL", "qwen3_vl": "Qwen3VL", "gemma3": "Gemma3"}
    cls = getattr(tf, name[config.model_type] + "ForConditionalGeneration")
    with bc.params_on_meta():
        model = cls._from_config(config, attn_implementation="sdpa", dtype=dtype)
    buffers = {key: buf.clone() for key, buf in model.named_buffers()}
    model.to_empty(device=device)
    for key, buf in model.named_buffers():
        buf.copy_(buffers[key])
    gen = torch.Generator(device=device).manual_seed(seed)
    unit = 0.0 if config.model_type == "gemma3" else 1.0
    for module in model.modules():
        kind = type(module).__name__.lower()
        for pname, param in module.named_parameters(recurse=False):
            if "norm" in kind and pname == "weight":
                param.fill_(unit if "rmsnorm" in kind else 1.0)
            elif pname == "bias":
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=gen)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id or 0
    return model.eval()


# ----------------------------------------------------------------------------- prompts
def _finish(
    model: Any, parts: tuple[list[int], list[int], list[int]], types: list[int],
    extra: dict[str, Tensor], key: str,
) -> dict[str, Any]:  # fmt: skip
    head, body, tail = parts
    device = model.device
    dtype = next(model.parameters()).dtype
    ids = torch.tensor([head + body + tail], device=device)
    kinds = torch.tensor([[0] * len(head) + types + [0] * len(tail)], device=device)
    lm: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), key: kinds}
    lm |= {k: v.to(device) for k, v in extra.items() if not v.is_floating_point()}
    full = {**lm, **{k: v.to(device, dtype) for k, v in extra.items() if v.is_floating_point()}}
    return {"lm": lm, "full": full}


def _text(n: int, gen: torch.Generator) -> list[int]:
    return torch.randint(10, 900, (n,), generator=gen).tolist()


def video_prompt(
    model: Any, rule: VideoRule, grid: tuple[int, int, int], text: int
) -> dict[str, Any]:
    """A prompt with one video of ``video_grid_thw`` ``grid`` and ``text`` text tokens;
    ``visual`` is its visual-token count."""
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    t, h, w = grid
    per = h * w // rule.merge**2
    start, video, end = cfg.vision_start_token_id, cfg.video_token_id, cfg.vision_end_token_id
    if cfg.model_type == "qwen2_5_vl":
        body, types = [start, *[video] * (t * per), end], [0, *[2] * (t * per), 0]
    else:
        body, types = [], []
        for _ in range(t):
            body += [*_text(TIMESTAMP_TOKENS, gen), start, *[video] * per, end]
            types += [0] * (TIMESTAMP_TOKENS + 1) + [2] * per + [0]
    patch_dim = 3 * rule.temporal * rule.patch**2
    extra = {
        "pixel_values_videos": torch.randn((t * h * w, patch_dim), generator=gen),
        "video_grid_thw": torch.tensor([[t, h, w]]),
    }
    if cfg.model_type == "qwen2_5_vl":
        extra["second_per_grid_ts"] = torch.tensor([1.0])  # temporal patch 2 / 2 fps
    head, tail = _text(text // 2, gen), _text(text - text // 2, gen)
    out = _finish(model, (head, body, tail), types, extra, "mm_token_type_ids")
    if cfg.model_type == "qwen2_5_vl":  # a float tensor the processor returns as is
        out["lm"]["second_per_grid_ts"] = out["full"]["second_per_grid_ts"]
    return out | {"visual": t * per, "per_frame": per}


def image_prompt(model: Any, n: int, text: int) -> dict[str, Any]:
    """About ``n`` visual tokens of images: one Qwen3-VL image (a ``2r x 2c`` patch grid,
    ``r * c = n``), or ``ceil(n / 256)`` Gemma 3 images."""
    cfg = model.config
    gen = torch.Generator().manual_seed(1)
    head, tail = _text(text // 2, gen), _text(text - text // 2, gen)
    if cfg.model_type == "gemma3":
        per = cfg.mm_tokens_per_image
        images = math.ceil(n / per)
        one = [cfg.boi_token_index, *[cfg.image_token_index] * per, cfg.eoi_token_index]
        body, types = one * images, [0, *[1] * per, 0] * images
        size = cfg.vision_config.image_size
        extra = {"pixel_values": torch.randn((images, 3, size, size), generator=gen)}
        out = _finish(model, (head, body, tail), types, extra, "token_type_ids")
        return out | {"visual": per * images}
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    vc = cfg.vision_config
    body = [cfg.vision_start_token_id, *[cfg.image_token_id] * n, cfg.vision_end_token_id]
    extra = {
        "pixel_values": torch.randn(
            (4 * n, 3 * vc.temporal_patch_size * vc.patch_size**2), generator=gen
        ),
        "image_grid_thw": torch.tensor([[1, 2 * rows, 2 * (n // rows)]]),
    }
    out = _finish(model, (head, body, tail), [0, *[1] * n, 0], extra, "mm_token_type_ids")
    return out | {"visual": n}
