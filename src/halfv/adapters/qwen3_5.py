"""The Qwen3.5 and Qwen3.5-MoE adapter: hybrid linear / full attention decoders.

It follows ``transformers/models/qwen3_5/modeling_qwen3_5.py`` and
``transformers/models/qwen3_5_moe/modeling_qwen3_5_moe.py`` (``Qwen3_5DecoderLayer``,
``Qwen3_5Attention``, ``Qwen3_5GatedDeltaNet``; the ``follows`` attribute says which
transformers releases it was tested on). The text decoder interleaves two layer kinds
(``config.layer_types``):

* ``"linear_attention"`` (Gated DeltaNet): a recurrence, no softmax scores and no
  per-position KV cache. halfv never scores there; after a prune the layer runs its
  recurrence over the rows that are left (:mod:`halfv.runtime.layer_kinds`);
* ``"full_attention"``: a Llama-style attention with per-head ``q_norm``/``k_norm``, a
  *gated* query (``q_proj`` gives the query and an output gate per head:
  ``AttentionParts.query_gate``) and partial rotary (the first quarter of each head,
  the model's own ``apply_rotary_pos_emb`` as ``LayerSpec.rotary``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, ClassVar

from torch import nn

from halfv.adapters.base import TESTED_TRANSFORMERS, LlamaStyleAdapter, scale_schedule
from halfv.adapters.qwen2_5_vl import Qwen25VLAdapter
from halfv.config import PruningConfig
from halfv.errors import HalfvTypeError
from halfv.interfaces import AttentionParts, LayerSpec, RotaryFn
from halfv.runtime.layer_kinds import valid_scored_layers

__all__ = ["Qwen35Adapter", "model_rotary", "snap_schedule"]


def model_rotary(attention: nn.Module) -> RotaryFn:
    """The ``apply_rotary_pos_emb`` of the modeling file that defines ``attention``."""
    fn = getattr(sys.modules[type(attention).__module__], "apply_rotary_pos_emb", None)
    if not callable(fn):
        msg = (
            f"{type(attention).__name__}'s modeling file has no apply_rotary_pos_emb; "
            "give the layer's rotary function in LayerSpec.rotary"
        )
        raise HalfvTypeError(msg)
    return fn  # type: ignore[no-any-return]


def snap_schedule(config: PruningConfig, specs: list[LayerSpec]) -> PruningConfig:
    """Move a (depth-scaled) schedule onto layers whose scoring layer is attention.

    The IVR layer moves to the nearest valid layer (every valid layer comes after the
    first attention layer; a prune before it is refused), the SSR layer to the nearest
    valid layer after the IVR layer, or is dropped when there is none; the shallower
    one on a tie.
    """
    valid = valid_scored_layers(specs)
    if not valid:
        return config
    ivr = min(valid, key=lambda v: (abs(v - config.ivr_layer), v))
    update: dict[str, Any] = {"ivr_layer": ivr}
    target = config.ssr_layer
    if target is not None:
        deeper = [v for v in valid if v > ivr]
        if deeper:
            update["ssr_layer"] = min(deeper, key=lambda v: (abs(v - target), v))
        else:
            update.update(ssr_layer=None, ssr_mode="none", ssr_policy=None, ssr_policy_options={})
    return PruningConfig.model_validate({**config.model_dump(), **update})


class Qwen35Adapter(LlamaStyleAdapter):
    """Qwen3.5 (dense and MoE): the Qwen2.5-VL schedule, moved onto full-attention layers.

    Default schedule: Qwen2.5-VL's release schedule (IVR at 2 of 28 keeping 25 %, SSR
    ``prune`` at 21 keeping 5 %), the closest released Qwen relative, scaled to the
    model's depth with :func:`~halfv.adapters.base.scale_schedule` and then snapped
    (:func:`snap_schedule`) so both scoring layers are full-attention layers: every
    Qwen3.5 checkpoint has a full-attention layer every 4th layer (3, 7, 11, ...), so
    IVR moves to layer 4 (its scoring layer 3 is the first place last-token attention
    exists; an earlier prune is refused) and SSR to the full-attention layer nearest 3/4
    of the depth (the 32-layer 9B: 24). ``prune`` rather than ``freeze`` because the
    Qwen family's deep layers are ranked by attention well (method doc §7), and a frozen
    linear layer saves nothing.
    """

    name: ClassVar[str] = "qwen3.5"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_5", "qwen3_5_moe")
    follows: ClassVar[str] = (
        "transformers/models/qwen3_5/modeling_qwen3_5.py and "
        f"transformers/models/qwen3_5_moe/modeling_qwen3_5_moe.py ({TESTED_TRANSFORMERS})"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = Qwen25VLAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = Qwen25VLAdapter.reference_schedule

    def attention_parts(self, layer: nn.Module) -> AttentionParts:
        """A full-attention layer's internals, with its gated query."""
        if getattr(layer, "self_attn", None) is None:
            msg = (
                f"adapter {self.name!r}: {type(layer).__name__} is a linear-attention "
                "(Gated DeltaNet) layer; it has no softmax attention parts (layer_specs() "
                "marks it kind='linear')"
            )
            raise HalfvTypeError(msg)
        return dataclasses.replace(super().attention_parts(layer), query_gate=True)

    def layer_specs(self, model: nn.Module) -> list[LayerSpec]:
        """``"linear"`` for Gated DeltaNet layers, ``"full"`` (with the model's partial
        rotary) for attention layers, from ``config.layer_types``."""
        specs = []
        lm: Any = self.language_model(model)
        types = list(lm.config.layer_types)
        for layer, layer_type in zip(self.decoder_layers(model), types, strict=True):
            attn = getattr(layer, "self_attn", None)
            if layer_type == "linear_attention" or attn is None:
                specs.append(LayerSpec(kind="linear", layer_type=layer_type))
            else:
                specs.append(LayerSpec(rotary=model_rotary(attn), layer_type=layer_type))
        return specs

    def default_config(self, model: nn.Module) -> PruningConfig:
        """The Qwen2.5-VL schedule scaled to this depth, on full-attention scoring layers."""
        scaled = scale_schedule(
            self.reference_schedule, self.reference_layers, self.num_layers(model)
        )
        return snap_schedule(scaled, self.layer_specs(model))
