"""The Gemma 3 adapter (``Gemma3ForConditionalGeneration``).

It follows ``transformers/models/gemma3/modeling_gemma3.py`` (the ``follows`` attribute
says which transformers releases it was tested on): the decoder is
``model.model.language_model`` (``Gemma3TextModel``), whose ``Gemma3DecoderLayer`` is a
*sandwich* block (``post_attention_layernorm`` on the attention output and
``pre_feedforward_layernorm`` / ``post_feedforward_layernorm`` around the MLP, read by
:func:`halfv.adapters.base.block_norms`) with per-head ``q_norm`` / ``k_norm``. Layers are
``sliding_attention`` (window ``config.sliding_window``, local rotary base) or
``full_attention`` (global rotary base) after ``config.layer_types``; each type gets its
own mask and rotary tables from the model, and :meth:`Gemma3Adapter.layer_specs` says
which is which. ``Gemma3Attention`` does not pass ``attn_logit_softcapping`` to its
attention function, so no soft cap is applied (``AttentionParts.softcap`` stays ``None``).
Image tokens (``config.image_token_id``) attend to each other bidirectionally in prefill
(``token_type_ids``); that lives in the model's own masks, which halfv gathers.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import nn

from halfv.adapters.base import TESTED_TRANSFORMERS, LlamaStyleAdapter
from halfv.config import PruningConfig
from halfv.interfaces import LayerSpec

__all__ = ["Gemma3Adapter"]


class Gemma3Adapter(LlamaStyleAdapter):
    """Gemma 3: IVR just after the first full-attention layer, freeze from about 2/3 depth.

    Gemma is not a Llama relative, and HalfV's paper gives no Gemma schedule, so the
    default is reasoned from the architecture rather than copied:

    * **IVR** at the layer after the first ``full_attention`` layer (layer 6 of
      Gemma 3 4B/12B/27B, whose first five layers are sliding). The relevance is then
      scored at a full-attention layer, where the last prompt token sees every image
      token; in a sliding layer, image tokens more than ``sliding_window`` positions back
      are invisible to it and would all score zero. It keeps 50 % of each image with
      20 % anchors, LLaVA-1.5's conservative budget (Gemma's 256 tokens per image are
      already pooled 4x4 from the SigLIP grid, so less inherited redundancy than
      LLaVA's 576 raw patches is left).
    * **SSR** ``freeze`` from the layer after the full-attention layer nearest 2/3 of
      the depth (layer 24 of the 34-layer 4B). Freezing keeps every surviving image
      token readable by text, the safer action where the saturation form is unmeasured;
      run ``halfv profile`` on your checkpoint (or ``ssr_mode='auto'``) to recalibrate.
    """

    name: ClassVar[str] = "gemma3"
    model_types: ClassVar[tuple[str, ...]] = ("gemma3",)
    follows: ClassVar[str] = (
        f"transformers/models/gemma3/modeling_gemma3.py ({TESTED_TRANSFORMERS})"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id",)
    reference_layers: ClassVar[int] = 34
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=6,
        ivr_keep=0.5,
        ivr_policy_options={"attention_share": 0.2},
        ssr_layer=24,
        ssr_mode="freeze",
    )

    def layer_specs(self, model: nn.Module) -> list[LayerSpec]:
        """``config.layer_types`` of the text model: sliding layers with their window."""
        config: Any = self.language_model(model).config
        window = int(config.sliding_window) if config.sliding_window else None
        specs = []
        for layer_type in config.layer_types[: self.num_layers(model)]:
            sliding = layer_type == "sliding_attention" and window is not None
            specs.append(
                LayerSpec(
                    kind="sliding" if sliding else "full",
                    window=window if sliding else None,
                    block="sandwich",
                    layer_type=layer_type,
                )
            )
        return specs

    def default_config(self, model: nn.Module) -> PruningConfig:
        """The schedule of the class docstring, placed by this model's layer types."""
        specs = self.layer_specs(model)
        n = len(specs)
        full = [i for i, spec in enumerate(specs) if spec.kind == "full"]
        if not full or full[0] + 1 > n - 2:
            return super().default_config(model)
        ivr = full[0] + 1
        target = 2 * n / 3
        candidates = sorted((f for f in full if ivr < f + 1 < n), key=lambda f: abs(f - target))
        ssr = candidates[0] + 1 if candidates else min(max(ivr + 1, math.floor(target)), n - 1)
        return PruningConfig.model_validate(
            {**self.reference_schedule.model_dump(), "ivr_layer": ivr, "ssr_layer": ssr}
        )
