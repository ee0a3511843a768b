"""The Qwen2.5-VL adapter.

It follows ``transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py`` (the ``follows``
attribute says which transformers releases it was tested on): the decoder
layers it hooks are that file's language model's, and the visual token ids come from the
config fields named in ``token_id_fields``. The default schedule comes from the HalfV
release (method doc §7) at the reference depth and is scaled to the model's depth by
:func:`halfv.adapters.base.scale_schedule`.
"""

from __future__ import annotations

from typing import ClassVar

from halfv.adapters.base import TESTED_TRANSFORMERS, LlamaStyleAdapter
from halfv.adapters.video import GridVideoFrames
from halfv.config import PruningConfig

__all__ = ["Qwen25VLAdapter"]


class Qwen25VLAdapter(GridVideoFrames, LlamaStyleAdapter):
    """Qwen2.5-VL: IVR at 2 keeping 25 %, then keep the top 5 % (of the original) from 21.

    Images and videos are both pruned (``image_token_id`` and ``video_token_id``); the
    3-D mrope positions of survivors are kept by gathering the rotary tables. A video is
    one run of ``t * h * w / 4`` video tokens (``video_grid_thw`` row ``(t, h, w)``): ``t``
    frames (temporal patches of two sampled frames) of ``h * w / 4`` tokens, in order.
    """

    name: ClassVar[str] = "qwen2.5-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    follows: ClassVar[str] = (
        f"transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py ({TESTED_TRANSFORMERS})"
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
