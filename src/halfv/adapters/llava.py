"""The LLaVA-1.5 (Vicuna) adapter.

It follows ``transformers/models/llava/modeling_llava.py`` (the ``follows``
attribute says which transformers releases it was tested on): the decoder
layers it hooks are that file's language model's, and the visual token ids come from the
config fields named in ``token_id_fields``. The default schedule comes from the HalfV
release (method doc §7) at the reference depth and is scaled to the model's depth by
:func:`halfv.adapters.base.scale_schedule`. Pixtral-12B (a ``llava`` model with a Pixtral
tower) gets one span per image across its ``[IMG_BREAK]`` row markers (span joiners).
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from halfv.adapters.base import TESTED_TRANSFORMERS, LlamaStyleAdapter
from halfv.adapters.mistral3 import pixtral_row_joiners
from halfv.config import PruningConfig

__all__ = ["LlavaAdapter"]


class LlavaAdapter(LlamaStyleAdapter):
    """LLaVA-1.5 (Vicuna): IVR at 3 keeping 50 % (20 % anchors), freeze visual tokens from 15."""

    name: ClassVar[str] = "llava"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    follows: ClassVar[str] = f"transformers/models/llava/modeling_llava.py ({TESTED_TRANSFORMERS})"
    reference_layers: ClassVar[int] = 32
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=3,
        ivr_keep=0.5,
        ivr_policy_options={"attention_share": 0.2},
        ssr_layer=15,
        ssr_mode="freeze",
    )

    def span_joiners(self, model: nn.Module) -> frozenset[int]:
        """None, except for Pixtral-12B (a ``llava`` model with a Pixtral tower), whose
        processor ends each row of patches with ``[IMG_BREAK]``: that id, so each image is
        one span (found as :mod:`halfv.adapters.mistral3` finds it)."""
        vision = getattr(model.config, "vision_config", None)
        if getattr(vision, "model_type", None) != "pixtral":
            return frozenset()
        return pixtral_row_joiners(self, model, None)
