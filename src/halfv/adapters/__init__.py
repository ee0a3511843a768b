"""Backbone adapters and the built-in plugin that registers them.

One file per backbone (``llava.py``, ``llava_next.py``, ``qwen2_vl.py``,
``qwen2_5_vl.py``, ``qwen3_vl.py``, ``internvl.py``, ``llava_onevision.py``,
``llava_next_video.py``, ``paligemma.py``, ``idefics3.py``, ``smolvlm.py``,
``mistral3.py``, ``gemma3.py``), each naming the transformers modeling
file it follows; the decoder logic they share is in ``base.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from halfv.adapters.base import LlamaStyleAdapter, scale_schedule
from halfv.adapters.gemma3 import Gemma3Adapter
from halfv.adapters.idefics3 import Idefics3Adapter
from halfv.adapters.internvl import InternVLAdapter
from halfv.adapters.llava import LlavaAdapter
from halfv.adapters.llava_next import LlavaNextAdapter
from halfv.adapters.llava_next_video import LlavaNextVideoAdapter
from halfv.adapters.llava_onevision import LlavaOnevisionAdapter
from halfv.adapters.mistral3 import Mistral3Adapter
from halfv.adapters.paligemma import PaliGemmaAdapter
from halfv.adapters.qwen2_5_vl import Qwen25VLAdapter
from halfv.adapters.qwen2_vl import Qwen2VLAdapter
from halfv.adapters.qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter
from halfv.adapters.smolvlm import SmolVLMAdapter
from halfv.interfaces import BackboneAdapter
from halfv.plugins.hookspecs import hookimpl

__all__ = [
    "Gemma3Adapter",
    "Idefics3Adapter",
    "InternVLAdapter",
    "LlamaStyleAdapter",
    "LlavaAdapter",
    "LlavaNextAdapter",
    "LlavaNextVideoAdapter",
    "LlavaOnevisionAdapter",
    "Mistral3Adapter",
    "PaliGemmaAdapter",
    "Qwen2VLAdapter",
    "Qwen3VLAdapter",
    "Qwen3VLMoeAdapter",
    "Qwen25VLAdapter",
    "SmolVLMAdapter",
    "register_adapters",
    "scale_schedule",
]


@hookimpl
def register_adapters(register: Callable[[BackboneAdapter], None]) -> None:
    """Register the built-in adapters."""
    for adapter_class in (
        LlavaAdapter,
        LlavaNextAdapter,
        Qwen25VLAdapter,
        InternVLAdapter,
        Qwen2VLAdapter,
        Qwen3VLAdapter,
        Qwen3VLMoeAdapter,
        Gemma3Adapter,
    ):
        register(adapter_class())
    for more in (  # issue #20: the families that were nearly exact already
        LlavaOnevisionAdapter,
        LlavaNextVideoAdapter,
        PaliGemmaAdapter,
        Idefics3Adapter,
        SmolVLMAdapter,
        Mistral3Adapter,
    ):
        register(more())
