"""The LLaVA-NeXT (Mistral-7B) adapter.

It follows ``transformers/models/llava_next/modeling_llava_next.py`` (the ``follows``
attribute says which transformers releases it was tested on): the decoder
layers it hooks are that file's language model's, and the visual token ids come from the
config fields named in ``token_id_fields``. The default schedule comes from the HalfV
release (method doc §7) at the reference depth and is scaled to the model's depth by
:func:`halfv.adapters.base.scale_schedule`.
"""

from __future__ import annotations

from typing import ClassVar

from halfv.adapters.base import TESTED_TRANSFORMERS, LlamaStyleAdapter
from halfv.config import PruningConfig

__all__ = ["LlavaNextAdapter"]


class LlavaNextAdapter(LlamaStyleAdapter):
    """LLaVA-NeXT (Mistral-7B): IVR at 2 keeping 50 % (10 % anchors), freeze from 16."""

    name: ClassVar[str] = "llava-next"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next",)
    follows: ClassVar[str] = (
        f"transformers/models/llava_next/modeling_llava_next.py ({TESTED_TRANSFORMERS})"
    )
    reference_layers: ClassVar[int] = 32
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=2,
        ivr_keep=0.5,
        ivr_policy_options={"attention_share": 0.1},
        ssr_layer=16,
        ssr_mode="freeze",
    )
