"""The LLaVA-NeXT-Video (Vicuna / Llama language model) adapter.

It follows ``transformers/models/llava_next_video/modeling_llava_next_video.py`` (the
``follows`` attribute says which transformers release it was tested on): the decoder
layers it hooks are that file's ``language_model`` (a ``LlamaModel`` for the 7B
checkpoints), and the visual token ids are the config's ``image_token_id`` and
``video_token_id``.

Layout (``processing_llava_next_video.py``): an image is one run of ``<image>`` tokens
(anyres, newline rows included) and a video one run of ``<video>`` tokens (every frame,
pooled by ``spatial_pool_stride``), so each image and each video is one span. A video's
frames (``pixel_values_videos`` ``[videos, frames, C, H, W]``, equal pooled frames in
order) are reported by :meth:`LlavaNextVideoAdapter.video_frames`, so a video is budgeted
as a whole or per frame (``PruningConfig.video_budget``).
"""

from __future__ import annotations

from typing import ClassVar

from halfv.adapters.base import LlamaStyleAdapter
from halfv.adapters.llava import LlavaAdapter
from halfv.adapters.video import CountedVideoFrames
from halfv.config import PruningConfig

__all__ = ["LlavaNextVideoAdapter"]


class LlavaNextVideoAdapter(CountedVideoFrames, LlamaStyleAdapter):
    """LLaVA-NeXT-Video: the LLaVA-1.5 (Vicuna) schedule, IVR at 3 of 32 keeping 50 %
    (20 % anchors), freeze visual tokens from 15, scaled to depth.

    LLaVA-NeXT-Video-7B's language model is Vicuna-7B, the backbone the HalfV release
    tuned that schedule on (method doc §7); the lifecycle is a property of the backbone,
    not of the visual front end. Run ``halfv profile`` on your checkpoint (the 34B one is
    Yi-34B) to recalibrate.
    """

    name: ClassVar[str] = "llava-next-video"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next_video",)
    follows: ClassVar[str] = (
        "transformers/models/llava_next_video/modeling_llava_next_video.py "
        "(tested on transformers 5.24)"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    reference_layers: ClassVar[int] = LlavaAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = LlavaAdapter.reference_schedule
