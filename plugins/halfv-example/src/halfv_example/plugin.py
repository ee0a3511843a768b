"""The ``qwen2-vl`` halfv plugin: an adapter for ``Qwen2VLForConditionalGeneration``.

Qwen2-VL's text decoder (``Qwen2VLTextModel`` in
``transformers/models/qwen2_vl/modeling_qwen2_vl.py``) is a Qwen2 decoder: each
``Qwen2VLDecoderLayer`` has ``input_layernorm``, ``self_attn.{q,k,v,o}_proj``,
``post_attention_layernorm`` and ``mlp``, exactly the Llama layout, and the multimodal
model keeps it at ``model.model.language_model``. Its config names the placeholders
``image_token_id`` and ``video_token_id``. So the adapter only subclasses
:class:`halfv.adapters.LlamaStyleAdapter` and states its ids and schedule; everything else
(finding layers, reading attention internals, gathering the 3-D mrope rotary tables of
the surviving tokens) is halfv's.

This module uses only public halfv API, so it doubles as the template for a new
backbone plugin: see ``docs/writing-an-adapter.md`` in the halfv repository.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import halfv
from halfv.adapters import LlamaStyleAdapter

__all__ = ["Qwen2VLAdapter", "register_adapters"]


class Qwen2VLAdapter(LlamaStyleAdapter):
    """Qwen2-VL: IVR at 2 keeping 25 %, then keep the top 5 % (of the original) from 21.

    Default schedule, tuned at the reference depth of Qwen2-VL-7B (28 decoder layers,
    Qwen2-7B language model): prune at layer 2 keeping 25 % of each image or video span
    (10 % of that budget as top-relevance anchors, the rest by diversity), then from layer
    21 keep the 5 % most relevant of the original span (``ssr_mode='prune'``). This is the
    Qwen2.5-VL schedule of halfv's built-in ``qwen2.5-vl`` adapter: both models share the
    Qwen2 backbone, and the HalfV token lifecycle is a property of the backbone. halfv
    scales the layer indices to the depth of other checkpoints (Qwen2-VL-2B has 28
    layers too, Qwen2-VL-72B has 80); recalibrate them if your checkpoint disagrees.

    Both images and videos are pruned (``image_token_id`` and ``video_token_id``).

    Args:
        saturation_detector: decides ``prune`` vs ``freeze`` for ``ssr_mode='auto'``;
            defaults to :class:`halfv.KLSaturationDetector` with its default threshold
            (``1e-3``), which Qwen2-family backbones exceed (deep-layer KL 1e-2..1e-1), so
            ``auto`` resolves to ``prune`` as in the default schedule.
    """

    name: ClassVar[str] = "qwen2-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    follows: ClassVar[str] = (
        "transformers/models/qwen2_vl/modeling_qwen2_vl.py (tested on transformers 5.23)"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = 28
    reference_schedule: ClassVar[halfv.PruningConfig] = halfv.PruningConfig(
        ivr_layer=2,
        ivr_keep=0.25,
        ivr_policy_options={"attention_share": 0.1},
        ssr_layer=21,
        ssr_mode="prune",
        ssr_keep=0.05,
    )

    def __init__(self, saturation_detector: halfv.SaturationDetector | None = None) -> None:
        super().__init__(saturation_detector or halfv.KLSaturationDetector())


@halfv.hookimpl
def register_adapters(register: Callable[[halfv.BackboneAdapter], None]) -> None:
    """Register the Qwen2-VL adapter (called once by halfv when it loads plugins).

    Args:
        register: halfv's callback; it validates the adapter and files it under its
            ``name`` (``qwen2-vl``) and ``model_types`` (``qwen2_vl``).
    """
    register(Qwen2VLAdapter())
