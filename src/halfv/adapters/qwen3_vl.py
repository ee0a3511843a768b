"""The Qwen3-VL and Qwen3-VL-MoE adapters.

They follow ``transformers/models/qwen3_vl/modeling_qwen3_vl.py`` and
``transformers/models/qwen3_vl_moe/modeling_qwen3_vl_moe.py`` (transformers 5.24):

* ``Qwen3VLTextDecoderLayer`` / ``Qwen3VLMoeTextDecoderLayer`` are Llama-style layers with
  per-head ``q_norm``/``k_norm`` before RoPE (read by :class:`LlamaStyleAdapter`); in the
  MoE model the ``mlp`` of sparse layers is a ``Qwen3VLMoeTextSparseMoeBlock``, a per-token
  function of ``[B, S, D]`` like a dense MLP.
* The text rotary embedding recomposes the interleaved mrope sections (T, H, W every
  third frequency) into plain ``[B, T, head_dim]`` tables used with the rotate-half
  ``apply_rotary_pos_emb``, so gathering the tables keeps each survivor's 3-D position
  and RoPE-aware relevance needs no rotary of its own.
* DeepStack: ``Qwen3VLTextModel.forward`` adds ``deepstack_visual_embeds[i]`` to the rows
  of ``visual_pos_masks`` after decoder layer ``i`` (one tensor per vision layer in
  ``vision_config.deepstack_visual_indexes``). The adapters declare them as
  :class:`~halfv.interfaces.TokenInputs`, which halfv gathers at each pruned stage.

The default schedule comes from the HalfV release (method doc §7, the Qwen rule: IVR 2
keeping 25 %, SSR prune at 21 keeping 5 %, at 28 layers) scaled to the model's depth by
:func:`halfv.adapters.base.scale_schedule`.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from halfv.adapters.base import LlamaStyleAdapter
from halfv.adapters.qwen2_5_vl import Qwen25VLAdapter
from halfv.adapters.video import GridVideoFrames
from halfv.config import PruningConfig
from halfv.interfaces import TokenInputs

__all__ = ["Qwen3VLAdapter", "Qwen3VLMoeAdapter"]

TESTED = "tested on transformers 5.24"


class Qwen3VLAdapter(GridVideoFrames, LlamaStyleAdapter):
    """Qwen3-VL: the Qwen rule (IVR 2 keeping 25 %, SSR prune 21 keeping 5 %) at 28 layers,
    scaled to depth (Qwen3-VL-2B: 28 layers; 4B and 8B: 36, so IVR 3 and SSR 27).

    Images and videos are both pruned. The DeepStack features added after the first
    decoder layers are gathered with the survivors (:meth:`token_inputs`), so the IVR
    layer may sit at or before the last DeepStack layer.
    """

    name: ClassVar[str] = "qwen3-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_vl",)
    follows: ClassVar[str] = f"transformers/models/qwen3_vl/modeling_qwen3_vl.py ({TESTED})"
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = Qwen25VLAdapter.reference_layers  # the Qwen rule
    reference_schedule: ClassVar[PruningConfig] = Qwen25VLAdapter.reference_schedule

    def token_inputs(self, model: nn.Module) -> TokenInputs:
        """``visual_pos_masks`` and ``deepstack_visual_embeds`` of the text model's call,
        one feature tensor per ``vision_config.deepstack_visual_indexes`` entry."""
        vision = getattr(model.config, "vision_config", None)
        indexes = getattr(vision, "deepstack_visual_indexes", None) or ()
        return TokenInputs(
            module=self.language_model(model),
            mask_arg="visual_pos_masks",
            features_arg="deepstack_visual_embeds",
            max_layers=len(indexes),
        )


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL-MoE: the Qwen3-VL schedule scaled to depth (30B-A3B: 48 layers, so IVR 3
    and SSR 36).

    ``output_router_logits=True`` is refused in a prefill that removes tokens (the
    router logits of pruned layers cover the kept rows only, and the model's
    load-balancing loss masks them with the full prompt's mask); generation and
    inference calls, which do not ask for router logits, are pruned as usual.
    """

    name: ClassVar[str] = "qwen3-vl-moe"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_vl_moe",)
    follows: ClassVar[str] = f"transformers/models/qwen3_vl_moe/modeling_qwen3_vl_moe.py ({TESTED})"
