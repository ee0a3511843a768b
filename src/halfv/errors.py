"""Exceptions raised by halfv.

Every error says which value was wrong and how to fix it. They all derive from
:class:`HalfvError`, so ``except halfv.HalfvError`` catches anything halfv raises on
purpose.
"""

from __future__ import annotations

__all__ = [
    "DuplicateComponentError",
    "HalfvError",
    "PluginLoadError",
    "UnknownComponentError",
    "UnsupportedModelError",
]


class HalfvError(Exception):
    """Base class of every error halfv raises deliberately."""


class UnknownComponentError(HalfvError, LookupError):
    """A component name (adapter, policy, estimator) is not registered."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(HalfvError, ValueError):
    """Two plugins registered a component under the same name."""


class PluginLoadError(HalfvError, ImportError):
    """A plugin failed to import or to register; raised when its component is requested."""


class UnsupportedModelError(HalfvError, ValueError):
    """The model, its attention implementation or its inputs cannot be pruned as asked."""
