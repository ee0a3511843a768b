"""The LLaVA-OneVision (Qwen2 language model) adapter.

It follows ``transformers/models/llava_onevision/modeling_llava_onevision.py`` (the
``follows`` attribute says which transformers release it was tested on): the decoder
layers it hooks are that file's ``language_model`` (a ``Qwen2Model``), and the visual
token ids are the config's ``image_token_id`` and ``video_token_id``.

Layout (``processing_llava_onevision.py``): an image is one run of ``<image>`` tokens
(the anyres base and crops, with the ``image_newline`` rows included in the run) and a
video one run of ``<video>`` tokens (every frame, pooled, plus one newline), so each
image and each video is one span. A video's frames (``pixel_values_videos``
``[videos, frames, C, H, W]``; the newline row joins the last frame) are reported by
:meth:`LlavaOnevisionAdapter.video_frames`, so a video is budgeted as a whole or per frame
(``PruningConfig.video_budget``).
"""

from __future__ import annotations

from typing import ClassVar

from halfv.adapters.base import LlamaStyleAdapter
from halfv.adapters.qwen2_5_vl import Qwen25VLAdapter
from halfv.adapters.video import CountedVideoFrames
from halfv.config import PruningConfig

__all__ = ["LlavaOnevisionAdapter"]


class LlavaOnevisionAdapter(CountedVideoFrames, LlamaStyleAdapter):
    """LLaVA-OneVision: the Qwen2.5-VL schedule (IVR at 2 of 28 keeping 25 %, then the top
    5 % from 21), scaled to depth.

    Its language model is Qwen2 (0.5B: 24 layers, 7B: 28, 72B: 80), a direct relative of
    Qwen2.5-VL's decoder, and the HalfV lifecycle is a property of the backbone (method
    doc §3); run ``halfv profile`` on your checkpoint to recalibrate.
    """

    name: ClassVar[str] = "llava-onevision"
    model_types: ClassVar[tuple[str, ...]] = ("llava_onevision",)
    follows: ClassVar[str] = (
        "transformers/models/llava_onevision/modeling_llava_onevision.py "
        "(tested on transformers 5.24)"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = Qwen25VLAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = Qwen25VLAdapter.reference_schedule
