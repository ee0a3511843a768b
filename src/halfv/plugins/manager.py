"""Plugin loading: built-ins and third-party packages take the same path.

:class:`Components` owns a ``pluggy.PluginManager("halfv")`` and four registries. It loads
:data:`DEFAULT_PLUGINS`, then each ``halfv`` entry point in a guarded loop, and calls each
plugin's hooks separately with a ``register`` callback bound to that plugin. A failure in one
plugin (import error, misspelt hook, exception in a hook, invalid or duplicate component) is
recorded as a :class:`~halfv.plugins.registry.PluginFailure` against it; the others still load. Any
``BaseException`` counts (``sys.exit()`` on import too), except ``KeyboardInterrupt``.

Environment switches (read when the components are built): ``HALFV_DISABLE_PLUGINS=a,b``
skips plugins (entry-point or built-in names); ``HALFV_LOAD_PLUGINS=a,b`` loads only these
entry points (built-ins always load; empty means none); ``HALFV_TRACE_PLUGINS=1`` logs every
hook call to the ``halfv.plugins`` logger.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pluggy
from pydantic import ValidationError

from halfv.errors import ComponentError, ConfigError
from halfv.interfaces import EntropyEstimator, IVRPolicy, SSRPolicy
from halfv.plugins import hookspecs
from halfv.plugins.registry import (
    AdapterRegistry,
    ClassRegistry,
    ComponentInfo,
    PluginFailure,
    Registry,
    normalise_name,
)

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "ComponentKind", "Components", "halfv_version"]

_log = logging.getLogger("halfv.plugins")  # the documented logger, HALFV_TRACE_PLUGINS

#: halfv's own plugin modules, registered before any third-party plugin (they win clashes)
DEFAULT_PLUGINS: tuple[str, ...] = ("halfv.policies", "halfv.estimators", "halfv.adapters")
#: the one entry-point group third-party plugins declare
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

ComponentKind = Literal["adapter", "IVR policy", "SSR policy", "estimator"]
_ClassKind = Literal["IVR policy", "SSR policy", "estimator"]  # kinds registered as classes
#: hook name -> kind it registers, in calling order
_HOOKS: dict[str, ComponentKind] = {
    "register_adapters": "adapter",
    "register_ivr_policies": "IVR policy",
    "register_ssr_policies": "SSR policy",
    "register_estimators": "estimator",
}
_SSR_MODES = ("prune", "freeze", "none")


@dataclass(frozen=True)
class _Source:
    """Who a plugin is: its name and the distribution providing it."""

    name: str
    package: str | None = None
    version: str | None = None


def halfv_version() -> str:
    """The installed halfv version, else ``halfv._version.__version__``, else ``"unknown"``."""
    try:
        return importlib.metadata.version("halfv")
    except importlib.metadata.PackageNotFoundError:
        try:
            return str(importlib.import_module("halfv._version").__version__)
        except (ImportError, AttributeError):
            return "unknown"


def _env_names(value: str | None) -> set[str] | None:
    return None if value is None else {normalise_name(n) for n in value.split(",") if n.strip()}


def _reraise_interrupt(exc: BaseException) -> None:
    """Re-raise Ctrl-C; any other exception, ``SystemExit`` included, is a plugin failure.

    A plugin that calls ``sys.exit()`` on import or in a hook must not end the process
    (or ``halfv plugins``): one broken plugin never stops the others.
    """
    if isinstance(exc, KeyboardInterrupt):
        raise exc


def _component_name(obj: object) -> str | None:
    """Normalised ``obj.name`` for a failure record; ``None`` when reading it fails too."""
    try:
        raw = getattr(obj, "name", None)
    except BaseException as exc:  # noqa: BLE001 -- the refused object's name may raise again
        _reraise_interrupt(exc)
        return None
    return normalise_name(raw) if isinstance(raw, str) else None


def _ssr_mode(cls: type[SSRPolicy]) -> None:
    if (mode := getattr(cls, "mode", None)) not in _SSR_MODES:
        msg = f"SSR policy {cls.name!r} has mode={mode!r}: set the class attribute to one of "
        raise ComponentError(msg + ", ".join(map(repr, _SSR_MODES)))


class Components:
    """The plugin manager plus the four component registries, loaded once.

    Args:
        default_plugins: module names registered first; ``None`` means
            :data:`DEFAULT_PLUGINS` (read at call time, so tests can patch it).
        environ: where the ``HALFV_*`` switches are read; ``None`` means ``os.environ``.
        load_entry_points: whether to discover third-party plugins at all.

    Attributes:
        pm: the ``pluggy.PluginManager("halfv")``.
        adapters, ivr_policies, ssr_policies, estimators: the registries.
        failures: every plugin failure, in the order it happened.
        disabled: plugins skipped by ``HALFV_DISABLE_PLUGINS`` / ``HALFV_LOAD_PLUGINS``.
    """

    def __init__(
        self,
        default_plugins: Sequence[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        load_entry_points: bool = True,
    ) -> None:
        env = os.environ if environ is None else environ
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        if env.get("HALFV_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(_log.debug)
            self.pm.enable_tracing()
        self.failures: list[PluginFailure] = []
        self.disabled: list[str] = []
        f = self.failures
        self.adapters = AdapterRegistry(f)
        self.ivr_policies = ClassRegistry[type[IVRPolicy]]("IVR policy", IVRPolicy, f)
        self.ssr_policies = ClassRegistry[type[SSRPolicy]]("SSR policy", SSRPolicy, f, _ssr_mode)
        self.estimators = ClassRegistry[type[EntropyEstimator]]("estimator", EntropyEstimator, f)
        registries = (self.adapters, self.ivr_policies, self.ssr_policies, self.estimators)
        self._registries: dict[ComponentKind, Registry[Any]] = dict(
            zip(_HOOKS.values(), registries, strict=True)
        )
        self._disable = _env_names(env.get("HALFV_DISABLE_PLUGINS")) or set()
        self._only = _env_names(env.get("HALFV_LOAD_PLUGINS"))
        defaults = DEFAULT_PLUGINS if default_plugins is None else default_plugins
        for module_name in defaults:
            self._load_default(module_name)
        if load_entry_points:
            self._load_entry_points()

    # ------------------------------------------------------------------ loading
    def _record(
        self,
        src: _Source,
        error: BaseException,
        stage: str,
        kind: str | None = None,
        component: str | None = None,
    ) -> None:
        tb = "".join(traceback.format_exception(error))
        failure = PluginFailure(
            src.name, src.package, src.version, error, tb, kind, component, stage
        )
        _log.debug("halfv plugin failure: %s", failure.summary())
        self.failures.append(failure)

    def _skip(self, name: str) -> bool:
        if normalise_name(name) in self._disable:
            self.disabled.append(name)
            return True
        return False

    def _load_default(self, module_name: str) -> None:
        if self._skip(module_name):
            return
        version = halfv_version()
        try:
            module = importlib.import_module(module_name)
        except BaseException as exc:  # noqa: BLE001 -- any import error is this plugin's failure
            _reraise_interrupt(exc)
            self._record(_Source(module_name, "halfv", version), exc, "import")
            return
        self.add_plugin(module, module_name, package="halfv", version=version)

    def _load_entry_points(self) -> None:
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        if self._only is not None:
            present = {normalise_name(ep.name) for ep in found}
            for missing in sorted(self._only - present):
                installed = ", ".join(sorted(ep.name for ep in found)) or "(none)"
                msg = (
                    f"plugin {missing!r} named in HALFV_LOAD_PLUGINS is not installed; "
                    f"installed {ENTRY_POINT_GROUP!r} entry points: {installed}"
                )
                self._record(_Source(missing), LookupError(msg), "import")
        for ep in found:
            if self._only is not None and normalise_name(ep.name) not in self._only:
                self.disabled.append(ep.name)
                continue
            if self._skip(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            src = _Source(ep.name, getattr(dist, "name", None), getattr(dist, "version", None))
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 -- recorded, the others still load
                _reraise_interrupt(exc)
                self._record(src, exc, "import")
                continue
            self.add_plugin(plugin, src.name, package=src.package, version=src.version)

    def add_plugin(
        self,
        plugin: object,
        name: str,
        *,
        package: str | None = None,
        version: str | None = None,
    ) -> bool:
        """Register ``plugin`` (a module or object with hookimpls) and run its hooks now.

        ``name`` is the plugin name used in messages; ``package``/``version`` describe the
        distribution providing it. Failures are recorded in :attr:`failures`, never raised.

        Returns:
            Whether the plugin was registered (its individual components may still fail).
        """
        src = _Source(name, package, version)
        try:
            self._register_with_pluggy(plugin, name)
        except BaseException as exc:  # noqa: BLE001 -- recorded against this plugin
            _reraise_interrupt(exc)
            self._record(src, exc, "register")
            return False
        for hook_name, kind in _HOOKS.items():
            self._call_hook(plugin, src, hook_name, kind)
        return True

    def _register_with_pluggy(self, plugin: object, name: str) -> None:
        other = self.pm.get_plugin(name)
        if other is not None:
            msg = f"plugin name {name!r} is already taken by {other!r}; rename the entry point"
            raise ComponentError(msg)
        if self.pm.is_registered(plugin):
            msg = (
                f"{plugin!r} is already registered as plugin {self.pm.get_name(plugin)!r}; "
                f"remove the duplicate entry point {name!r}"
            )
            raise ComponentError(msg)
        self.pm.register(plugin, name=name)
        callers = self.pm.get_hookcallers(plugin) or []
        valid = ", ".join(_HOOKS)
        unknown = sorted(
            hc.name
            for hc in callers
            if hc.spec is None
            and any(i.plugin is plugin and not i.optionalhook for i in hc.get_hookimpls())
        )
        if unknown:
            msg = f"plugin {name!r} implements unknown hook(s) {', '.join(unknown)}; "
        elif not callers:
            what = getattr(plugin, "__name__", type(plugin).__name__)
            msg = f"plugin {name!r} ({what}) implements no halfv hooks; decorate functions "
            msg += "with @halfv.hookimpl and name them after a hook; "
        else:
            return
        self.pm.unregister(plugin)
        raise pluggy.PluginValidationError(plugin, msg + f"valid halfv hooks are: {valid}")

    def _call_hook(self, plugin: object, src: _Source, hook_name: str, kind: ComponentKind) -> None:
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        if not any(impl.plugin is plugin for impl in caller.get_hookimpls()):
            return
        registry = self._registries[kind]

        def register(obj: object) -> None:
            try:
                registry.register(obj, plugin=src.name, package=src.package, version=src.version)
            except BaseException as exc:  # noqa: BLE001 -- one bad component, not the plugin
                _reraise_interrupt(exc)
                self._record(src, exc, "component", kind, _component_name(obj))

        others = [p for p in self.pm.get_plugins() if p is not plugin]
        try:
            self.pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
        except BaseException as exc:  # noqa: BLE001 -- attributed to this plugin and kind
            _reraise_interrupt(exc)
            self._record(src, exc, "hook", kind)

    # ------------------------------------------------------------------ access
    def list_components(self, kind: ComponentKind | None = None) -> list[ComponentInfo[Any]]:
        """Registered components of ``kind`` (all kinds when ``None``), sorted by name."""
        kinds: Sequence[ComponentKind] = tuple(_HOOKS.values()) if kind is None else (kind,)
        return [info for k in kinds for info in self._registries[k].entries()]

    def create(self, kind: _ClassKind, name: str, /, **options: Any) -> Any:
        """Instantiate the policy or estimator class ``name`` of ``kind`` with ``options``.

        Raises:
            ValueError: ``options`` fail validation; names the field and the accepted ones.
            PluginLoadError: the plugin that would provide ``name`` failed to load.
            UnknownComponentError: ``name`` is not registered.
        """
        registry = self._registries[kind]
        cls = registry.get(name)
        try:
            return cls(**options)
        except ValidationError as exc:
            fields = ", ".join(sorted(cls.model_fields)) or "(none)"
            msg = (
                f"invalid options for {registry.kind} {normalise_name(name)!r}: {exc}\n"
                f"accepted options: {fields}"
            )
            raise ConfigError(msg) from exc
