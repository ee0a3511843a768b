"""The GLM-4.1V, GLM-4.6V and GLM-4.1V-MoE (GLM-4.5V) adapter.

It follows ``transformers/models/glm4v/modeling_glm4v.py``,
``transformers/models/glm46v/modeling_glm46v.py`` (whose language model is GLM-4.1V's
``Glm4vTextModel``) and ``transformers/models/glm4v_moe/modeling_glm4v_moe.py`` (the
``follows`` attribute says which transformers releases it was tested on). Their text
decoder layers differ from Llama's in ways halfv must reproduce:

* GLM-4.1V and GLM-4.6V (``Glm4vTextDecoderLayer``) are *sandwich* blocks:
  ``post_self_attn_layernorm`` norms the attention output and ``post_mlp_layernorm`` the
  MLP output before each residual add (read by :func:`halfv.adapters.base.block_norms`,
  ``LayerSpec.block == "sandwich"``); GLM-4.5V (``Glm4vMoeTextDecoderLayer``) is a
  pre-norm block with a mixture-of-experts MLP;
* partial rotary over 3-D M-RoPE tables: the first half of each head
  (``partial_rotary_factor`` 0.5) is rotated, in adjacent pairs (``rotate_half_llm``)
  in GLM-4.1V/4.6V and by rotate-half in GLM-4.5V. The adapter hands each modeling
  file's own ``apply_rotary_pos_emb`` to the runtime (``LayerSpec.rotary``), so relevance
  and frozen layers rotate exactly as the model does.

Images and videos both use ``image_token_id`` placeholders in ``input_ids`` (GLM-4.1V
marks video frames with timestamps, not with ``video_token_id``); both ids are listed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn

from halfv.adapters.base import TESTED_TRANSFORMERS, LlamaStyleAdapter
from halfv.adapters.qwen2_5_vl import Qwen25VLAdapter
from halfv.adapters.qwen3_5 import model_rotary
from halfv.config import PruningConfig
from halfv.interfaces import LayerSpec

__all__ = ["Glm4vAdapter"]


class Glm4vAdapter(LlamaStyleAdapter):
    """GLM-4.1V / 4.6V / 4.5V: the Qwen2.5-VL schedule scaled to depth (40 layers: 3 and 30).

    Default schedule: HalfV released no GLM schedule (method doc §7). GLM-4.1V's visual
    side is a Qwen relative (a native-resolution ViT with 2x2 patch merging feeding
    thousands of tokens per image, 3-D M-RoPE positions), so it takes Qwen2.5-VL's
    release schedule (IVR at 2 of 28 keeping 25 % with 10 % of the budget by attention;
    SSR ``prune`` at 21 of 28 keeping the top 5 % of the original tokens), scaled to the
    model's depth by :func:`~halfv.adapters.base.scale_schedule`: layers 3 and 30 on
    the 40-layer GLM-4.1V-9B and GLM-4.6V-Flash, 3 and 35 on the 46-layer GLM-4.5V.
    """

    name: ClassVar[str] = "glm4v"
    model_types: ClassVar[tuple[str, ...]] = ("glm4v", "glm46v", "glm4v_moe")
    follows: ClassVar[str] = (
        "transformers/models/glm4v/modeling_glm4v.py, glm46v/modeling_glm46v.py and "
        f"glm4v_moe/modeling_glm4v_moe.py ({TESTED_TRANSFORMERS})"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = Qwen25VLAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = Qwen25VLAdapter.reference_schedule

    def layer_specs(self, model: nn.Module) -> list[LayerSpec]:
        """The default specs (sandwich blocks) with the model's own rotary function."""
        specs = super().layer_specs(model)
        layers: list[Any] = list(self.decoder_layers(model))
        return [
            dataclasses.replace(spec, rotary=model_rotary(layer.self_attn))
            for spec, layer in zip(specs, layers, strict=True)
        ]
