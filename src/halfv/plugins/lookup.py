"""The process-wide components and the lookups the public API exposes.

:func:`get_components` builds one :class:`~halfv.plugins.manager.Components` on first use
(under a re-entrant lock, so a plugin that looks a component up while plugins are loading
gets an error instead of a deadlock); ``halfv.get_adapter``, ``halfv.get_ivr_policy`` and
the other ``get_*`` functions read from it. :func:`reset_components` drops it (for tests).
"""

from __future__ import annotations

import threading
from typing import Any

from halfv.errors import HalfvRuntimeError, UnsupportedModelError
from halfv.interfaces import BackboneAdapter, EntropyEstimator, IVRPolicy, SSRPolicy
from halfv.plugins.manager import ComponentKind, Components
from halfv.plugins.registry import ComponentInfo, PluginFailure

__all__ = [
    "get_adapter",
    "get_adapter_for",
    "get_components",
    "get_estimator",
    "get_ivr_policy",
    "get_ssr_policy",
    "list_components",
    "plugin_failures",
    "reset_components",
]

_lock = threading.RLock()  # re-entrant, so a plugin calling get_* while loading gets an error
_components: Components | None = None
_building = False


def get_components() -> Components:
    """The process-wide :class:`Components`, built on first use."""
    global _components, _building  # noqa: PLW0603 -- lazy singleton, see reset_components
    with _lock:
        if _components is None:
            if _building:
                msg = "a plugin looked up a halfv component while plugins were loading; "
                msg += "move that call from import or hook time into a function run later"
                raise HalfvRuntimeError(msg)
            _building = True
            try:
                _components = Components()
            finally:
                _building = False
        return _components


def reset_components() -> None:
    """Forget the loaded components; the next access reloads plugins (for tests)."""
    global _components  # noqa: PLW0603 -- see get_components
    with _lock:
        _components = None


def get_adapter(model_type_or_name: str) -> BackboneAdapter:
    """The adapter with this name, else the one serving this HF ``config.model_type``.

    Raises ``UnknownComponentError`` listing what is registered if nothing matches, or
    ``PluginLoadError`` if the plugin that would provide it failed to load.
    """
    return get_components().adapters.lookup(model_type_or_name)


def get_adapter_for(model: object) -> BackboneAdapter:
    """The adapter serving ``model.config.model_type`` (errors as :func:`get_adapter`).

    Raises ``UnsupportedModelError`` if ``model`` has no ``config.model_type``.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if not isinstance(model_type, str) or not model_type:
        msg = (
            f"cannot find an adapter for {type(model).__name__}: it has no config.model_type; "
            "pass a transformers model or call halfv.get_adapter(name)"
        )
        raise UnsupportedModelError(msg)
    return get_components().adapters.info_for_model_type(model_type).obj


def get_ivr_policy(name: str, /, **options: Any) -> IVRPolicy:
    """Instantiate the IVR policy ``name`` with ``options`` (errors: :meth:`Components.create`)."""
    policy: IVRPolicy = get_components().create("IVR policy", name, **options)
    return policy


def get_ssr_policy(name: str, /, **options: Any) -> SSRPolicy:
    """Instantiate the SSR policy ``name`` with ``options`` (errors as :func:`get_ivr_policy`)."""
    policy: SSRPolicy = get_components().create("SSR policy", name, **options)
    return policy


def get_estimator(name: str, /, **options: Any) -> EntropyEstimator:
    """Instantiate the entropy estimator ``name`` (errors as :func:`get_ivr_policy`)."""
    estimator: EntropyEstimator = get_components().create("estimator", name, **options)
    return estimator


def list_components(kind: ComponentKind | None = None) -> list[ComponentInfo[Any]]:
    """Registered components of ``kind`` (all kinds when ``None``), grouped by kind."""
    return get_components().list_components(kind)


def plugin_failures() -> list[PluginFailure]:
    """Every recorded plugin failure, in load order."""
    return list(get_components().failures)
