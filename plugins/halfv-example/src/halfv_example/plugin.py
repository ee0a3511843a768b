"""The ``vipllava`` halfv plugin: an adapter for ``VipLlavaForConditionalGeneration``.

VipLLaVA's text decoder (``model.model.language_model`` of
``transformers/models/vipllava/modeling_vipllava.py``) is a Llama (Vicuna) decoder: each
``LlamaDecoderLayer`` has ``input_layernorm``, ``self_attn.{q,k,v,o}_proj``,
``post_attention_layernorm`` and ``mlp``, exactly the layout halfv reads. Its config names
the image placeholder ``image_token_index`` (readable as ``image_token_id`` too), and each
image becomes one contiguous run of placeholders. So the adapter only subclasses
:class:`halfv.adapters.LlamaStyleAdapter` and states its ids and schedule; everything else
(finding layers, reading attention internals, gathering the rotary tables of the surviving
tokens) is halfv's.

This module uses only public halfv API, so it doubles as the template for a new
backbone plugin: see ``docs/writing-an-adapter.md`` in the halfv repository.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import halfv
from halfv.adapters import LlamaStyleAdapter

__all__ = ["VipLlavaAdapter", "register_adapters"]


class VipLlavaAdapter(LlamaStyleAdapter):
    """VipLLaVA: IVR at 3 keeping 50 % (20 % anchors), freeze visual tokens from 15.

    Default schedule, at the reference depth of VipLLaVA-7B (32 decoder layers, Vicuna-7B
    language model): prune at layer 3 keeping 50 % of each image (20 % of that budget as
    top-relevance anchors, the rest by diversity), then from layer 15 stop updating the
    visual tokens (``ssr_mode='freeze'``). This is the LLaVA-1.5 schedule of halfv's
    built-in ``llava`` adapter: VipLLaVA is LLaVA-1.5 fine-tuned for visual prompts (its
    projector reads several CLIP layers), and the HalfV token lifecycle is a property of
    the language backbone. halfv scales the layer indices to the depth of other
    checkpoints (VipLLaVA-13B has 40 layers); recalibrate them if your checkpoint
    disagrees.

    Args:
        saturation_detector: decides ``prune`` vs ``freeze`` for ``ssr_mode='auto'``;
            defaults to :class:`halfv.KLSaturationDetector` with its default threshold
            (``1e-3``), which Vicuna backbones stay below (deep-layer KL 1e-6..1e-4), so
            ``auto`` resolves to ``freeze`` as in the default schedule.
    """

    name: ClassVar[str] = "vipllava"
    model_types: ClassVar[tuple[str, ...]] = ("vipllava",)
    follows: ClassVar[str] = (
        "transformers/models/vipllava/modeling_vipllava.py (tested on transformers 5.24)"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id",)
    reference_layers: ClassVar[int] = 32
    reference_schedule: ClassVar[halfv.PruningConfig] = halfv.PruningConfig(
        ivr_layer=3,
        ivr_keep=0.5,
        ivr_policy_options={"attention_share": 0.2},
        ssr_layer=15,
        ssr_mode="freeze",
    )

    def __init__(self, saturation_detector: halfv.SaturationDetector | None = None) -> None:
        super().__init__(saturation_detector or halfv.KLSaturationDetector())


@halfv.hookimpl
def register_adapters(register: Callable[[halfv.BackboneAdapter], None]) -> None:
    """Register the VipLLaVA adapter (called once by halfv when it loads plugins).

    Args:
        register: halfv's callback; it validates the adapter and files it under its
            ``name`` (``vipllava``) and ``model_types`` (``vipllava``).
    """
    register(VipLlavaAdapter())
