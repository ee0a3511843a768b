"""Name-normalising registries for halfv components.

One :class:`Registry` per kind ("adapter", "IVR policy", "SSR policy", "estimator"). Each
entry is a :class:`ComponentInfo` that remembers the plugin and distribution it came from.

* names are normalised (lowercase, stripped, ``_``/space -> ``-``): ``"Top_K"`` is ``"top-k"``;
* a taken name raises :class:`~halfv.errors.DuplicateComponentError` naming both owners, and
  the first registration stays;
* an unknown name raises :class:`~halfv.errors.UnknownComponentError` listing the registered
  names and any plugins that failed to load -- or :class:`~halfv.errors.PluginLoadError`,
  chained from the original error, when a failed plugin is known to be responsible for it.

Validation raises ``TypeError``/``ValueError``; :mod:`halfv.plugins` records those against the
plugin that registered the object.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from halfv.errors import (
    ComponentError,
    ComponentTypeError,
    DuplicateComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from halfv.interfaces import BackboneAdapter, SaturationDetector

__all__ = [
    "AdapterRegistry",
    "ClassRegistry",
    "ComponentInfo",
    "PluginFailure",
    "Registry",
    "normalise_name",
]

T = TypeVar("T")
C = TypeVar("C", bound=type)


def normalise_name(name: str) -> str:
    """Return the registry key for ``name``: lowercase, stripped, ``_``/space -> ``-``.

    Args:
        name: a component, model-type or plugin name as a user or plugin wrote it.

    Returns:
        The normalised key, e.g. ``"Qwen2_5 VL"`` -> ``"qwen2-5-vl"``.
    """
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _owner(plugin: str, package: str | None, version: str | None) -> str:
    if package is None:
        return f"plugin {plugin!r}"
    return f"plugin {plugin!r} ({package} {version or 'unknown'})"


@dataclass(frozen=True)
class ComponentInfo(Generic[T]):
    """One registered component and where it came from.

    Attributes:
        name: normalised registry key.
        obj: the adapter instance, or the policy/estimator class.
        plugin: name of the plugin that registered it (entry-point name or module name).
        package: distribution that provides the plugin (``None`` if unknown).
        version: version of that distribution (``None`` if unknown).
        kind: what the component is, e.g. ``"IVR policy"``.
    """

    name: str
    obj: T
    plugin: str
    package: str | None
    version: str | None
    kind: str = ""

    @property
    def owner(self) -> str:
        """``plugin 'x' (package version)``, as used in error messages."""
        return _owner(self.plugin, self.package, self.version)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to import, to register, or to register one component.

    Attributes:
        plugin: plugin name (entry-point name, or module name for built-ins).
        package: distribution providing the plugin, ``None`` if unknown.
        version: that distribution's version, ``None`` if unknown.
        error: the exception that was raised.
        traceback: the formatted traceback of ``error``.
        kind: the component kind whose hook failed; ``None`` if the whole plugin failed.
        component: normalised name of the component that was refused, when known.
        stage: ``"import"`` (loading it), ``"register"`` (pluggy refused it, e.g. an
            unknown hook name), ``"hook"`` (a ``register_*`` hook raised) or
            ``"component"`` (one registered object was refused).
    """

    plugin: str
    package: str | None
    version: str | None
    error: BaseException
    traceback: str
    kind: str | None = None
    component: str | None = None
    stage: str = "import"

    @property
    def owner(self) -> str:
        """``plugin 'x' (package version)``, as used in error messages."""
        return _owner(self.plugin, self.package, self.version)

    def summary(self) -> str:
        """One line: ``name (package version): ErrorType: message``."""
        source = self.package and f" ({self.package} {self.version or 'unknown'})"
        first = str(self.error).strip().splitlines()
        detail = first[0] if first else ""
        return f"{self.plugin}{source or ''}: {type(self.error).__name__}: {detail}"


class Registry(Generic[T]):
    """Components of one kind, keyed by normalised name.

    Args:
        kind: human label used in messages, e.g. ``"adapter"`` or ``"IVR policy"``.
        failures: the loader's list of plugin failures, shared between registries; it is
            read (never written) to explain unknown names.
    """

    def __init__(self, kind: str, failures: Sequence[PluginFailure] = ()) -> None:
        self.kind = kind
        self._failures = failures
        self._entries: dict[str, ComponentInfo[T]] = {}

    # ------------------------------------------------------------------ registration
    def validate(self, obj: object) -> tuple[str, T]:
        """Check ``obj`` and return ``(raw name, obj)``; raise ``TypeError``/``ValueError``."""
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name.strip():
            msg = f"{self.kind} {obj!r} has no `name`: set a non-empty string `name` attribute"
            raise ComponentTypeError(msg)
        return name, obj  # type: ignore[return-value]  # refined by subclasses

    def register(
        self,
        obj: object,
        *,
        plugin: str,
        package: str | None = None,
        version: str | None = None,
    ) -> ComponentInfo[T]:
        """Validate ``obj`` and add it under its normalised name, owned by ``plugin``.

        ``package`` and ``version`` describe the distribution providing the plugin.

        Raises:
            TypeError: ``obj`` is not the right kind of object.
            ValueError: ``obj`` is malformed (e.g. an empty name).
            DuplicateComponentError: the name (or, for adapters, a model type) is taken.
        """
        raw, value = self.validate(obj)
        key = normalise_name(raw)
        if not key:
            msg = f"{self.kind} name {raw!r} is empty after normalisation; use a real name"
            raise ComponentError(msg)
        info = ComponentInfo(key, value, plugin, package, version, self.kind)
        existing = self._entries.get(key)
        if existing is not None:
            msg = (
                f"{self.kind} {key!r} from {info.owner} is already registered by "
                f"{existing.owner}; rename one of them or disable a plugin with "
                f"HALFV_DISABLE_PLUGINS={plugin}"
            )
            raise DuplicateComponentError(msg)
        self._check_extra(info)
        self._entries[key] = info
        return info

    def _check_extra(self, info: ComponentInfo[T]) -> None:
        """Further conflict checks before ``info`` is stored (none by default)."""

    # ------------------------------------------------------------------ lookup
    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalise_name(name) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[ComponentInfo[T]]:
        """Registered entries, sorted by name."""
        return [self._entries[k] for k in self.names()]

    def info(self, name: str) -> ComponentInfo[T]:
        """The entry registered under ``name``.

        Raises:
            PluginLoadError: a plugin that failed to load is responsible for ``name``.
            UnknownComponentError: ``name`` is not registered; lists the registered names.
        """
        key = normalise_name(name)
        found = self._entries.get(key)
        if found is not None:
            return found
        self._raise_if_failed(key)
        listed = ", ".join(self.names()) or "(none)"
        msg = f"unknown {self.kind} {name!r}; registered: {listed}{self.failure_note()}"
        raise UnknownComponentError(msg)

    def get(self, name: str) -> T:
        """The component registered under ``name`` (same errors as :meth:`info`)."""
        return self.info(name).obj

    # ------------------------------------------------------------------ failures
    def responsible_failure(self, key: str) -> PluginFailure | None:
        """The failure of a plugin known to be responsible for normalised ``key``, if any.

        A failed plugin is responsible when it refused a component of this kind named
        ``key``, or when its plugin name is ``key`` and it failed as a whole or in this
        kind's hook.
        """
        for failure in self._failures:
            if failure.kind == self.kind and failure.component == key:
                return failure
        for failure in self._failures:
            same_kind = failure.kind is None or failure.kind == self.kind
            if same_kind and failure.component is None and normalise_name(failure.plugin) == key:
                return failure
        return None

    def _raise_if_failed(self, key: str) -> None:
        failure = self.responsible_failure(key)
        if failure is None:
            return
        msg = (
            f"{self.kind} {key!r} is unavailable because {failure.owner} failed to load: "
            f"{type(failure.error).__name__}: {failure.error}; fix or update the plugin, "
            "and run `halfv plugins` for details"
        )
        raise PluginLoadError(msg) from failure.error

    def failure_note(self) -> str:
        """``"; N plugin(s) failed to load: ..."`` or ``""`` when none failed."""
        if not self._failures:
            return ""
        parts = "; ".join(f.summary() for f in self._failures)
        n = len(self._failures)
        return f"; {n} plugin(s) failed to load: {parts}; run `halfv plugins` for details"


class ClassRegistry(Registry[C]):
    """A registry of classes that must subclass ``base`` (policies, estimators).

    ``base`` is the required base class, e.g. :class:`~halfv.IVRPolicy` (typed ``type``
    because it is usually abstract); ``check`` is an optional extra test of each class that
    raises ``TypeError``/``ValueError``.
    """

    def __init__(
        self,
        kind: str,
        base: type,
        failures: Sequence[PluginFailure] = (),
        check: Callable[[C], None] | None = None,
    ) -> None:
        super().__init__(kind, failures)
        self.base = base
        self._check = check

    def validate(self, obj: object) -> tuple[str, C]:
        """Require a concrete subclass of ``base`` with a non-empty string ``name``."""
        base = f"{self.base.__module__}.{self.base.__qualname__}"
        if not isinstance(obj, type) or not issubclass(obj, self.base):
            hint = "; pass the class, not an instance" if isinstance(obj, self.base) else ""
            msg = f"{self.kind} must be a subclass of {base}, got {obj!r}{hint}"
            raise ComponentTypeError(msg)
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name.strip():
            msg = (
                f"{self.kind} class {obj.__qualname__} has no `name`: set a class attribute, "
                f"e.g. name: ClassVar[str] = {obj.__name__.lower()!r}"
            )
            raise ComponentTypeError(msg)
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
            msg = f"{self.kind} {name!r} ({obj.__qualname__}) is abstract: implement {missing}"
            raise ComponentTypeError(msg)
        if self._check is not None:
            self._check(obj)  # type: ignore[arg-type]  # narrowed by issubclass above
        return name, obj  # type: ignore[return-value]  # narrowed by issubclass above


class AdapterRegistry(Registry[BackboneAdapter]):
    """Backbone adapters, keyed by name and also indexed by each ``config.model_type``."""

    def __init__(self, failures: Sequence[PluginFailure] = ()) -> None:
        super().__init__("adapter", failures)
        self._by_model_type: dict[str, ComponentInfo[BackboneAdapter]] = {}

    def validate(self, obj: object) -> tuple[str, BackboneAdapter]:
        """Require a complete :class:`~halfv.BackboneAdapter` instance, with a detector."""
        if isinstance(obj, type) and issubclass(obj, BackboneAdapter):
            msg = f"adapter {obj.__qualname__} was registered as a class; pass an instance"
            raise ComponentTypeError(msg)
        if not isinstance(obj, BackboneAdapter):
            msg = f"adapter must be a halfv.BackboneAdapter instance, got {obj!r}"
            raise ComponentTypeError(msg)
        label = type(obj).__qualname__
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name.strip():
            msg = f"adapter {label} has no `name`: set a non-empty lowercase class attribute"
            raise ComponentTypeError(msg)
        if name != name.lower():
            msg = f"adapter name {name!r} must be lowercase; use {name.lower()!r}"
            raise ComponentError(msg)
        model_types = getattr(obj, "model_types", None)
        if (
            not isinstance(model_types, tuple)
            or not model_types
            or not all(isinstance(m, str) and m.strip() for m in model_types)
        ):
            msg = (
                f"adapter {name!r} has model_types={model_types!r}: set a non-empty tuple of "
                "HF config.model_type strings, e.g. ('llava',)"
            )
            raise ComponentError(msg)
        follows = getattr(obj, "follows", None)
        if not isinstance(follows, str) or not follows.strip():
            msg = (
                f"adapter {name!r} has no `follows`: name the transformers code it follows "
                "and the versions tested, e.g. 'transformers modeling_llava.py @ 4.56'"
            )
            raise ComponentError(msg)
        detector = getattr(obj, "saturation_detector", None)
        if not isinstance(detector, SaturationDetector):
            what = "no saturation_detector" if detector is None else f"{detector!r} as detector"
            msg = (
                f"adapter {name!r} has {what}: set it to a SaturationDetector instance, "
                "e.g. halfv.KLSaturationDetector()"
            )
            raise ComponentTypeError(msg)
        return name, obj

    def _check_extra(self, info: ComponentInfo[BackboneAdapter]) -> None:
        seen: set[str] = set()
        for model_type in info.obj.model_types:
            key = normalise_name(model_type)
            other = self._by_model_type.get(key)
            if other is not None:
                msg = (
                    f"adapter {info.name!r} from {info.owner} claims model_type "
                    f"{model_type!r}, which adapter {other.name!r} from {other.owner} already "
                    f"serves; drop it from model_types or disable a plugin with "
                    f"HALFV_DISABLE_PLUGINS={info.plugin}"
                )
                raise DuplicateComponentError(msg)
            seen.add(key)
        for key in seen:
            self._by_model_type[key] = info

    def model_types(self) -> list[str]:
        """Registered model types (as the adapters spell them), sorted."""
        return sorted(m for e in self._entries.values() for m in e.obj.model_types)

    def info_for_model_type(self, model_type: str) -> ComponentInfo[BackboneAdapter]:
        """The entry serving HF ``config.model_type`` ``model_type``.

        Raises:
            PluginLoadError: a failed plugin is responsible for ``model_type``.
            UnknownComponentError: no adapter serves ``model_type``.
        """
        key = normalise_name(model_type)
        found = self._by_model_type.get(key)
        if found is not None:
            return found
        self._raise_if_failed(key)
        types = ", ".join(self.model_types()) or "(none)"
        names = ", ".join(self.names()) or "(none)"
        msg = (
            f"no adapter for model_type {model_type!r}; registered model types: {types} "
            f"(adapters: {names}); install a plugin that supports it{self.failure_note()}"
        )
        raise UnknownComponentError(msg)

    def lookup(self, model_type_or_name: str) -> BackboneAdapter:
        """The adapter named ``model_type_or_name``, else the one serving that model type."""
        key = normalise_name(model_type_or_name)
        if key in self._entries:
            return self._entries[key].obj
        return self.info_for_model_type(model_type_or_name).obj
