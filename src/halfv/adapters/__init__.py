"""Backbone adapters and the built-in plugin that registers them.

One file per backbone (``llava.py``, ``llava_next.py``, ``qwen2_5_vl.py``,
``internvl.py``, ``gemma3.py``), each naming the transformers modeling file it follows;
the decoder logic they share is in ``base.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from halfv.adapters.base import LlamaStyleAdapter, scale_schedule
from halfv.adapters.gemma3 import Gemma3Adapter
from halfv.adapters.internvl import InternVLAdapter
from halfv.adapters.llava import LlavaAdapter
from halfv.adapters.llava_next import LlavaNextAdapter
from halfv.adapters.qwen2_5_vl import Qwen25VLAdapter
from halfv.interfaces import BackboneAdapter
from halfv.plugins.hookspecs import hookimpl

__all__ = [
    "Gemma3Adapter",
    "InternVLAdapter",
    "LlamaStyleAdapter",
    "LlavaAdapter",
    "LlavaNextAdapter",
    "Qwen25VLAdapter",
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
        Gemma3Adapter,
    ):
        register(adapter_class())
