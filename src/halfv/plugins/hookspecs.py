"""Hook specifications of the ``halfv`` plugin system.

A plugin is a module (or object) with functions decorated by :data:`halfv.hookimpl`
whose names match the specs below; pluggy rejects any other ``halfv`` hook name, so a
misspelt hook fails loudly at load time instead of being ignored. Each component hook
receives a ``register`` callback: call it once per component. Built-in components use the
very same hooks (see :data:`halfv.plugins.DEFAULT_PLUGINS`). :func:`register_commands`
adds ``halfv`` subcommands instead (the lab, ``halfv-lab``, adds ``demo`` and ``bench``).

Third-party packages expose their plugin module through an entry point in the
``halfv`` group::

    [project.entry-points.halfv]
    my_backbone = "my_package.halfv_plugin"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from halfv.interfaces import BackboneAdapter, EntropyEstimator, IVRPolicy, SSRPolicy

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "halfv"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_adapters(register: Callable[[BackboneAdapter], None]) -> None:
    """Register backbone adapters.

    :param register: call ``register(adapter)`` with a :class:`~halfv.BackboneAdapter`
        instance. The adapter's ``name`` is its registry key and its ``model_types`` are
        the ``config.model_type`` values it serves. It must carry a
        ``saturation_detector``; an adapter without one is refused.
    """


@hookspec
def register_ivr_policies(register: Callable[[type[IVRPolicy]], None]) -> None:
    """Register IVR (shallow-layer) selection policies.

    :param register: call ``register(PolicyClass)`` with an :class:`~halfv.IVRPolicy`
        subclass; its ``name`` class attribute is the registry key and its pydantic fields
        are the options ``halfv.get_ivr_policy(name, **options)`` accepts.
    """


@hookspec
def register_ssr_policies(register: Callable[[type[SSRPolicy]], None]) -> None:
    """Register SSR (deep-layer) policies.

    :param register: call ``register(PolicyClass)`` with an :class:`~halfv.SSRPolicy`
        subclass; its ``name`` is the registry key and ``mode`` says what it does.
    """


@hookspec
def register_estimators(register: Callable[[type[EntropyEstimator]], None]) -> None:
    """Register entropy estimators.

    :param register: call ``register(EstimatorClass)`` with an
        :class:`~halfv.EntropyEstimator` subclass; its ``name`` is the registry key.
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``halfv`` command-line subcommands.

    Called only by the ``halfv`` command line (:func:`halfv.cli.build_parser`), after the
    built-in subcommands, once per plugin. The contract is the built-in one
    (:mod:`halfv.cli`): add each command with ``subparsers.add_parser(name, ...)`` and
    ``set_defaults(func=run)``, where ``run(args) -> int`` returns the exit code; import
    heavy modules inside ``run``. A plugin whose hook raises, reuses a taken command name
    or adds a command without ``func`` is reported by name on stderr and its commands are
    left out; the other plugins' and the built-in commands still work.

    :param subparsers: the top-level ``argparse`` subparsers of ``halfv``.
    """
