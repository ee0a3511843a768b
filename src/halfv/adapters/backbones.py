"""Built-in backbone adapters: LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL and InternVL.

Default schedules come from the HalfV release (method doc §7) at the reference depth and
are scaled to the model's depth by :func:`halfv.adapters.base.scale_schedule`.
"""

from __future__ import annotations

from typing import ClassVar

from halfv.adapters.base import LlamaStyleAdapter
from halfv.config import PruningConfig

__all__ = ["InternVLAdapter", "LlavaAdapter", "LlavaNextAdapter", "Qwen25VLAdapter"]

_TESTED = "tested on transformers 5.17, 5.23 and 5.24"


class LlavaAdapter(LlamaStyleAdapter):
    """LLaVA-1.5 (Vicuna): IVR at 3 keeping 50 % (20 % anchors), freeze visual tokens from 15."""

    name: ClassVar[str] = "llava"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    follows: ClassVar[str] = f"transformers/models/llava/modeling_llava.py ({_TESTED})"
    reference_layers: ClassVar[int] = 32
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=3,
        ivr_keep=0.5,
        ivr_policy_options={"attention_share": 0.2},
        ssr_layer=15,
        ssr_mode="freeze",
    )


class LlavaNextAdapter(LlamaStyleAdapter):
    """LLaVA-NeXT (Mistral-7B): IVR at 2 keeping 50 % (10 % anchors), freeze from 16."""

    name: ClassVar[str] = "llava-next"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next",)
    follows: ClassVar[str] = f"transformers/models/llava_next/modeling_llava_next.py ({_TESTED})"
    reference_layers: ClassVar[int] = 32
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=2,
        ivr_keep=0.5,
        ivr_policy_options={"attention_share": 0.1},
        ssr_layer=16,
        ssr_mode="freeze",
    )


class Qwen25VLAdapter(LlamaStyleAdapter):
    """Qwen2.5-VL: IVR at 2 keeping 25 %, then keep the top 5 % (of the original) from 21.

    Images and videos are both pruned (``image_token_id`` and ``video_token_id``); the
    3-D mrope positions of survivors are kept by gathering the rotary tables.
    """

    name: ClassVar[str] = "qwen2.5-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    follows: ClassVar[str] = f"transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py ({_TESTED})"
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = 28
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=2,
        ivr_keep=0.25,
        ivr_policy_options={"attention_share": 0.1},
        ssr_layer=21,
        ssr_mode="prune",
        ssr_keep=0.05,
    )


class InternVLAdapter(LlamaStyleAdapter):
    """InternVL (3.x, Qwen2.5 language model): the Qwen2.5 schedule.

    InternVL3's language model is Qwen2.5, and the HalfV lifecycle is a property of the
    backbone (method doc §3), so the defaults are Qwen2.5-VL's at 28 layers; run
    ``halfv profile`` on your checkpoint to recalibrate.
    """

    name: ClassVar[str] = "internvl"
    model_types: ClassVar[tuple[str, ...]] = ("internvl",)
    follows: ClassVar[str] = f"transformers/models/internvl/modeling_internvl.py ({_TESTED})"
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = 28
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=2,
        ivr_keep=0.25,
        ivr_policy_options={"attention_share": 0.1},
        ssr_layer=21,
        ssr_mode="prune",
        ssr_keep=0.05,
    )
