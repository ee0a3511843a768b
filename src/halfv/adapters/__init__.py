"""Backbone adapters and the built-in plugin that registers them.

One file per backbone family, each naming the transformers modeling file it follows; the
decoder logic they share is in ``base.py``. :data:`BUILT_IN` lists them in registration
order.
"""

from __future__ import annotations

from collections.abc import Callable

from halfv.adapters.base import LlamaStyleAdapter, scale_schedule
from halfv.adapters.gemma3 import Gemma3Adapter
from halfv.adapters.glm4v import Glm4vAdapter
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
from halfv.adapters.qwen3_5 import Qwen35Adapter
from halfv.adapters.qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter
from halfv.adapters.smolvlm import SmolVLMAdapter
from halfv.interfaces import BackboneAdapter
from halfv.plugins.hookspecs import hookimpl

__all__ = [
    "BUILT_IN",
    "Gemma3Adapter",
    "Glm4vAdapter",
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
    "Qwen35Adapter",
    "SmolVLMAdapter",
    "register_adapters",
    "scale_schedule",
]

#: the built-in adapter classes, in registration order
BUILT_IN: tuple[type[BackboneAdapter], ...] = (
    LlavaAdapter,
    LlavaNextAdapter,
    Qwen25VLAdapter,
    InternVLAdapter,
    # issue #20: the backbones people run in 2026
    Qwen2VLAdapter,
    Qwen3VLAdapter,
    Qwen3VLMoeAdapter,
    Qwen35Adapter,
    Glm4vAdapter,
    Gemma3Adapter,
    LlavaOnevisionAdapter,
    LlavaNextVideoAdapter,
    PaliGemmaAdapter,
    Idefics3Adapter,
    SmolVLMAdapter,
    Mistral3Adapter,
)


@hookimpl
def register_adapters(register: Callable[[BackboneAdapter], None]) -> None:
    """Register the built-in adapters."""
    for adapter_class in BUILT_IN:
        register(adapter_class())
