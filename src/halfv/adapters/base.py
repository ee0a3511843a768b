"""Shared adapter logic for transformers VLMs with Llama-style language models.

LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Qwen3-VL (dense and MoE) and InternVL all run a
pre-norm decoder whose layers have ``input_layernorm``, ``self_attn.{q,k,v,o}_proj``
(Qwen3: plus per-head ``q_norm``/``k_norm``), ``post_attention_layernorm`` and ``mlp``
(``transformers.models.llama.modeling_llama.LlamaDecoderLayer`` and its copies in the
Mistral, Qwen2, Qwen2-VL, Qwen2.5-VL and Qwen3-VL files). A backbone adapter therefore only
says which config fields hold the visual token ids and what its default schedule is.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import nn

from halfv.config import PruningConfig
from halfv.errors import HalfvTypeError, HalfvValueError
from halfv.interfaces import AttentionParts, BackboneAdapter, SaturationDetector
from halfv.saturation import KLSaturationDetector

__all__ = ["TESTED_TRANSFORMERS", "LlamaStyleAdapter", "block_norms", "scale_schedule"]

#: the transformers releases the built-in adapters were tested on (each adapter's ``follows``)
TESTED_TRANSFORMERS = "tested on transformers 5.17, 5.23 and 5.24"


def scale_schedule(
    reference: PruningConfig, reference_layers: int, num_layers: int
) -> PruningConfig:
    """Move a schedule tuned for ``reference_layers`` onto a model of ``num_layers``.

    Layer indices scale with relative depth (rounded half up), the IVR layer stays >= 1,
    and the SSR layer stays strictly between the IVR layer and the last layer. A model too
    shallow for an SSR stage (fewer than 3 layers) gets ``ssr_mode='none'``.
    """
    if num_layers == reference_layers:
        return reference
    if num_layers < 2:
        msg = f"a model with {num_layers} decoder layer(s) cannot be pruned: need at least 2"
        raise HalfvValueError(msg)
    ratio = num_layers / reference_layers
    ivr = min(max(1, math.floor(reference.ivr_layer * ratio + 0.5)), num_layers - 1)
    update: dict[str, Any] = {"ivr_layer": ivr}
    if reference.ssr_layer is not None:
        if ivr + 1 > num_layers - 1:
            update.update(ssr_layer=None, ssr_mode="none", ssr_policy=None, ssr_policy_options={})
        else:
            ssr = math.floor(reference.ssr_layer * ratio + 0.5)
            update["ssr_layer"] = min(max(ssr, ivr + 1), num_layers - 1)
    return PruningConfig.model_validate({**reference.model_dump(), **update})


def block_norms(block: Any) -> tuple[nn.Module, nn.Module | None, nn.Module | None]:
    """``(pre-MLP norm, attention-output norm, MLP-output norm)`` of a decoder layer.

    A pre-norm (Llama) block has only the first. Sandwich blocks also norm each sublayer's
    output before its residual add, under the names of
    ``transformers.models.gemma3.modeling_gemma3.Gemma3DecoderLayer`` (and Gemma 2:
    ``post_attention_layernorm`` on the attention output, ``pre_feedforward_layernorm``
    and ``post_feedforward_layernorm`` around the MLP) or of
    ``transformers.models.glm4.modeling_glm4.Glm4DecoderLayer``
    (``post_self_attn_layernorm``, ``post_attention_layernorm`` before the MLP,
    ``post_mlp_layernorm``).
    """
    if hasattr(block, "pre_feedforward_layernorm"):
        return (
            block.pre_feedforward_layernorm,
            block.post_attention_layernorm,
            block.post_feedforward_layernorm,
        )
    if hasattr(block, "post_self_attn_layernorm"):
        return (
            block.post_attention_layernorm,
            block.post_self_attn_layernorm,
            block.post_mlp_layernorm,
        )
    return block.post_attention_layernorm, None, None


class LlamaStyleAdapter(BackboneAdapter):
    """Base for VLMs whose text decoder layers follow ``LlamaDecoderLayer``.

    Subclasses set :attr:`name`, :attr:`model_types`, :attr:`follows`,
    :attr:`token_id_fields` (config attributes holding visual token ids),
    :attr:`reference_layers` and :attr:`reference_schedule`.
    """

    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id",)
    reference_layers: ClassVar[int]
    reference_schedule: ClassVar[PruningConfig]

    def __init__(self, saturation_detector: SaturationDetector | None = None) -> None:
        self.saturation_detector = saturation_detector or KLSaturationDetector()

    def language_model(self, model: nn.Module) -> nn.Module:
        """``model.model.language_model``, else ``model.language_model``, else ``model.model``."""
        for path in (("model", "language_model"), ("language_model",), ("model",)):
            module: Any = model
            for attr in path:
                module = getattr(module, attr, None)
            if isinstance(module, nn.Module) and isinstance(
                getattr(module, "layers", None), nn.ModuleList
            ):
                return module
        msg = (
            f"adapter {self.name!r} cannot find the text decoder of {type(model).__name__}: "
            "expected model.model.language_model.layers"
        )
        raise HalfvTypeError(msg)

    def visual_token_ids(self, model: nn.Module) -> tuple[int, ...]:
        """Ids named by :attr:`token_id_fields` on ``model.config`` (missing ones skipped)."""
        config = model.config
        ids = tuple(
            int(v) for f in self.token_id_fields if isinstance(v := getattr(config, f, None), int)
        )
        if not ids:
            msg = (
                f"adapter {self.name!r}: {type(config).__name__} sets none of "
                f"{', '.join(self.token_id_fields)}"
            )
            raise HalfvTypeError(msg)
        return ids

    def attention_parts(self, layer: nn.Module) -> AttentionParts:
        """Read the standard Llama-style module names of one decoder layer."""
        block: Any = layer  # transformers layers are untyped: read their attributes as Any
        try:
            attn = block.self_attn
            config = attn.config
            heads = int(config.num_attention_heads)
            pre_mlp, attn_out, mlp_out = block_norms(block)
            return AttentionParts(
                input_layernorm=block.input_layernorm,
                q_proj=attn.q_proj,
                k_proj=attn.k_proj,
                v_proj=attn.v_proj,
                o_proj=attn.o_proj,
                post_attention_layernorm=pre_mlp,
                mlp=block.mlp,
                num_heads=heads,
                num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
                head_dim=int(attn.head_dim),
                scaling=float(attn.scaling),
                q_norm=getattr(attn, "q_norm", None),
                k_norm=getattr(attn, "k_norm", None),
                sliding_window=getattr(attn, "sliding_window", None),
                attn_output_norm=attn_out,
                mlp_output_norm=mlp_out,
            )
        except AttributeError as exc:
            msg = (
                f"adapter {self.name!r}: {type(layer).__name__} is not a Llama-style decoder "
                f"layer ({exc}); write an adapter that overrides attention_parts()"
            )
            raise HalfvTypeError(msg) from exc

    def default_config(self, model: nn.Module) -> PruningConfig:
        """The reference schedule scaled to this model's depth."""
        return scale_schedule(
            self.reference_schedule, self.reference_layers, self.num_layers(model)
        )
