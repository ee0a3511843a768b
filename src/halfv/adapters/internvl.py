"""The InternVL (3.x, Qwen2.5 language model) adapter.

It follows ``transformers/models/internvl/modeling_internvl.py`` (the ``follows``
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

__all__ = ["InternVLAdapter"]


class InternVLAdapter(LlamaStyleAdapter):
    """InternVL (3.x, Qwen2.5 language model): the Qwen2.5 schedule.

    InternVL3's language model is Qwen2.5, and the HalfV lifecycle is a property of the
    backbone (method doc §3), so the defaults are Qwen2.5-VL's at 28 layers; run
    ``halfv profile`` on your checkpoint to recalibrate.
    """

    name: ClassVar[str] = "internvl"
    model_types: ClassVar[tuple[str, ...]] = ("internvl",)
    follows: ClassVar[str] = (
        f"transformers/models/internvl/modeling_internvl.py ({TESTED_TRANSFORMERS})"
    )
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
