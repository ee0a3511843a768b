"""Exceptions raised by halfv.

Every error says which value was wrong and how to fix it. They all derive from
:class:`HalfvError`, so ``except halfv.HalfvError`` catches anything halfv raises on
purpose. Each one also derives from the built-in exception callers caught before this
hierarchy existed (``ValueError``, ``TypeError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working.

Hierarchy::

    HalfvError
    ├── HalfvValueError (ValueError)          a value is out of range, malformed or inconsistent
    │   ├── ConfigError                       a pruning config (object, mapping or file) is invalid
    │   │   ├── ConfigTypeError (TypeError)   ... of a type halfv cannot read
    │   │   └── ConfigFileNotFoundError (FileNotFoundError)
    │   ├── ComponentError                    a plugin component (adapter, policy, ...) is malformed
    │   │   ├── ComponentTypeError (TypeError)
    │   │   └── DuplicateComponentError       two plugins registered the same name
    │   └── UnsupportedModelError             the model or its inputs cannot be pruned as asked
    ├── HalfvTypeError (TypeError)            an argument has the wrong type
    ├── HalfvFileNotFoundError (FileNotFoundError)
    ├── HalfvRuntimeError (RuntimeError)      an operation is called in a state that forbids it
    ├── MissingDependencyError (ModuleNotFoundError)  an optional dependency is not installed
    ├── UnknownComponentError (LookupError)   a component name is not registered
    └── PluginLoadError (ImportError)         the plugin providing a component failed to load

``NotImplementedError`` from :meth:`halfv.SSRPolicy.select` on non-pruning policies is the
interface's contract, not an error of the caller's input, and stays a plain
``NotImplementedError``.
"""

from __future__ import annotations

__all__ = [
    "ComponentError",
    "ComponentTypeError",
    "ConfigError",
    "ConfigFileNotFoundError",
    "ConfigTypeError",
    "DuplicateComponentError",
    "HalfvError",
    "HalfvFileNotFoundError",
    "HalfvRuntimeError",
    "HalfvTypeError",
    "HalfvValueError",
    "MissingDependencyError",
    "PluginLoadError",
    "UnknownComponentError",
    "UnsupportedModelError",
]


class HalfvError(Exception):
    """Base class of every error halfv raises deliberately."""


class HalfvValueError(HalfvError, ValueError):
    """A value given to halfv is out of range, malformed or inconsistent with another."""


class HalfvTypeError(HalfvError, TypeError):
    """An argument given to halfv has the wrong type."""


class HalfvFileNotFoundError(HalfvError, FileNotFoundError):
    """A file or directory halfv was pointed at does not exist."""


class HalfvRuntimeError(HalfvError, RuntimeError):
    """An operation was called in a state that forbids it (e.g. while plugins load)."""


class MissingDependencyError(HalfvError, ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra to install."""


class ConfigError(HalfvValueError):
    """A pruning config is invalid: the message names the file (if any), the field, the value
    and the accepted values."""


class ConfigTypeError(ConfigError, TypeError):
    """A config was given as a type halfv cannot read (e.g. ``halfv.apply(model, 5)``)."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """A config path does not exist or is not a file."""


class ComponentError(HalfvValueError):
    """A component a plugin registered (adapter, policy, estimator) is malformed."""


class ComponentTypeError(ComponentError, TypeError):
    """A component a plugin registered is not the right kind of object."""


class UnknownComponentError(HalfvError, LookupError):
    """A component name (adapter, policy, estimator) is not registered."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(ComponentError):
    """Two plugins registered a component under the same name."""


class PluginLoadError(HalfvError, ImportError):
    """A plugin failed to import or to register; raised when its component is requested."""


class UnsupportedModelError(HalfvValueError):
    """The model, its attention implementation or its inputs cannot be pruned as asked."""
