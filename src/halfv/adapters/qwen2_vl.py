"""The Qwen2-VL adapter.

It follows ``transformers/models/qwen2_vl/modeling_qwen2_vl.py`` (the ``follows``
attribute says which transformers releases it was tested on): ``Qwen2VLTextModel``'s
decoder layers are Llama-style Qwen2 layers at ``model.model.language_model``, its rotary
embedding hands every layer mrope tables already recomposed to ``[B, T, head_dim]``
(so gathering them at the survivors' positions keeps their 3-D positions), and the visual
token ids come from the config fields named in ``token_id_fields``. The default schedule
comes from the HalfV release (method doc §7) at the reference depth and is scaled to the
model's depth by :func:`halfv.adapters.base.scale_schedule`.
"""

from __future__ import annotations

from typing import ClassVar

from halfv.adapters.base import LlamaStyleAdapter
from halfv.adapters.qwen2_5_vl import Qwen25VLAdapter
from halfv.adapters.video import GridVideoFrames
from halfv.config import PruningConfig

__all__ = ["Qwen2VLAdapter"]

#: Qwen2-VL is tested on the release these adapters were written against (5.24)
TESTED = "tested on transformers 5.23 and 5.24"


class Qwen2VLAdapter(GridVideoFrames, LlamaStyleAdapter):
    """Qwen2-VL: IVR at 2 keeping 25 %, then keep the top 5 % (of the original) from 21.

    Qwen2-VL-7B has 28 layers and the Qwen2 backbone of Qwen2.5-VL, and the HalfV token
    lifecycle is a property of the backbone (method doc §3), so the defaults are
    Qwen2.5-VL's at 28 layers, scaled to other depths (Qwen2-VL-72B has 80). Images and
    videos are both pruned (``image_token_id`` and ``video_token_id``).
    """

    name: ClassVar[str] = "qwen2-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    follows: ClassVar[str] = f"transformers/models/qwen2_vl/modeling_qwen2_vl.py ({TESTED})"
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = Qwen25VLAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = Qwen25VLAdapter.reference_schedule
