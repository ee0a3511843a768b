"""halfv's plugin system: hook specifications, the component registries and their loader.

* :mod:`halfv.plugins.hookspecs`: the hooks a plugin implements (``@halfv.hookimpl``).
* :mod:`halfv.plugins.registry`: the registries of adapters, policies and estimators.
* :mod:`halfv.plugins.manager`: :class:`Components`, which loads the built-in plugins
  (:data:`DEFAULT_PLUGINS`) and the ``halfv`` entry points, each in a guarded loop.
* :mod:`halfv.plugins.lookup`: the process-wide components and the ``get_*`` lookups that
  ``halfv/__init__.py`` re-exports.

Environment switches (read when the components are built): ``HALFV_DISABLE_PLUGINS=a,b``
skips plugins (entry-point or built-in names); ``HALFV_LOAD_PLUGINS=a,b`` loads only these
entry points (built-ins always load; empty means none); ``HALFV_TRACE_PLUGINS=1`` logs every
hook call to the ``halfv.plugins`` logger.
"""

from __future__ import annotations

from halfv.plugins.lookup import (
    get_adapter,
    get_adapter_for,
    get_components,
    get_estimator,
    get_ivr_policy,
    get_ssr_policy,
    list_components,
    plugin_failures,
    reset_components,
)
from halfv.plugins.manager import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    ComponentKind,
    Components,
    halfv_version,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "ComponentKind",
    "Components",
    "get_adapter",
    "get_adapter_for",
    "get_components",
    "get_estimator",
    "get_ivr_policy",
    "get_ssr_policy",
    "halfv_version",
    "list_components",
    "plugin_failures",
    "reset_components",
]
