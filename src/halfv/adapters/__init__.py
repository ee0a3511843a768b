"""Backbone adapters and the built-in plugin that registers them."""

from __future__ import annotations

from collections.abc import Callable

from halfv.adapters.backbones import (
    InternVLAdapter,
    LlavaAdapter,
    LlavaNextAdapter,
    Qwen25VLAdapter,
)
from halfv.adapters.base import LlamaStyleAdapter, scale_schedule
from halfv.interfaces import BackboneAdapter
from halfv.plugins.hookspecs import hookimpl

__all__ = [
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
    """Register the four built-in adapters."""
    for adapter_class in (LlavaAdapter, LlavaNextAdapter, Qwen25VLAdapter, InternVLAdapter):
        register(adapter_class())
