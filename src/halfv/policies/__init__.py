"""Built-in selection policies and the plugin hooks that register them.

Built-in policies go through the same hooks as third-party ones: this module is a halfv
plugin whose :func:`register_ivr_policies` and :func:`register_ssr_policies` hand every
built-in class to the registry's ``register`` callback.
"""

from __future__ import annotations

from collections.abc import Callable

from halfv.interfaces import IVRPolicy, SSRPolicy
from halfv.plugins.hookspecs import hookimpl
from halfv.policies.ivr import (
    AttentionPolicy,
    DiversityPolicy,
    HalfVPolicy,
    RandomPolicy,
    UniformPolicy,
)
from halfv.policies.ssr import Freeze, NoSSR, TopKPrune

__all__ = [
    "BUILTIN_IVR_POLICIES",
    "BUILTIN_SSR_POLICIES",
    "AttentionPolicy",
    "DiversityPolicy",
    "Freeze",
    "HalfVPolicy",
    "NoSSR",
    "RandomPolicy",
    "TopKPrune",
    "UniformPolicy",
    "register_ivr_policies",
    "register_ssr_policies",
]

#: the IVR policy classes this package registers, in registration order
BUILTIN_IVR_POLICIES: tuple[type[IVRPolicy], ...] = (
    HalfVPolicy,
    AttentionPolicy,
    DiversityPolicy,
    RandomPolicy,
    UniformPolicy,
)
#: the SSR policy classes this package registers, in registration order
BUILTIN_SSR_POLICIES: tuple[type[SSRPolicy], ...] = (TopKPrune, Freeze, NoSSR)


@hookimpl
def register_ivr_policies(register: Callable[[type[IVRPolicy]], None]) -> None:
    """Register the built-in IVR policies (halfv, attention, diversity, random, uniform).

    Args:
        register: the registry's callback, called once per class.
    """
    for policy in BUILTIN_IVR_POLICIES:
        register(policy)


@hookimpl
def register_ssr_policies(register: Callable[[type[SSRPolicy]], None]) -> None:
    """Register the built-in SSR policies (prune, freeze, none).

    Args:
        register: the registry's callback, called once per class.
    """
    for policy in BUILTIN_SSR_POLICIES:
        register(policy)
