"""Built-in selection policies and the plugin hooks that register them.

One small file per policy: ``ivr_halfv.py``, ``ivr_attention.py``, ``ivr_diversity.py``,
``ivr_random.py`` and ``ivr_uniform.py`` (IVR, the shallow stage), ``ssr_prune.py``,
``ssr_freeze.py`` and ``ssr_none.py`` (SSR, the deep stage); ``base.py`` holds what several
share. Built-in policies go through the same hooks as third-party ones: this module is a
halfv plugin whose :func:`register_ivr_policies` and :func:`register_ssr_policies` hand
every built-in class to the registry's ``register`` callback.

**IVR (shallow-layer) policies.**

Each policy is a frozen pydantic model (``extra="forbid"``): its fields are the options
``halfv.get_ivr_policy(name, **options)`` accepts, validated at construction. Each
implements only ``_choose``; :meth:`halfv.IVRPolicy.select` validates the inputs, handles
1-D input, returns ``arange(N)`` when ``keep == N`` and sorts the result.

=============  ======================================  ============  ==============
name           rule                                    needs_scores  needs_features
=============  ======================================  ============  ==============
``halfv``      anchors by relevance + cosine FPS       yes           yes
``attention``  top-k relevance (FastV-style)           yes           no
``diversity``  cosine FPS from index 0 (DivPrune)      no            yes
``random``     seeded uniform sample                   no            no
``uniform``    evenly strided spatial downsample       no            no
=============  ======================================  ============  ==============

Policies with ``needs_scores = False`` still receive a ``[B, N]`` ``scores`` tensor (any
values, e.g. zeros): :meth:`~halfv.IVRPolicy.select` reads the batch size, the token count
and the device from it.

**SSR (deep-layer) policies.**

* ``prune`` (:class:`TopKPrune`) keeps the most relevant visual tokens (method §5a; the
  relevance is RoPE-aware and computed over the *current* visual span).
* ``freeze`` (:class:`Freeze`) keeps every visual token but stops updating it (method §5b).
* ``none`` (:class:`NoSSR`) does nothing.

Only ``prune`` policies select tokens; ``freeze`` and ``none`` raise
:class:`NotImplementedError` from :meth:`~halfv.SSRPolicy.select`, for every ``keep``.
"""

from __future__ import annotations

from collections.abc import Callable

from halfv.interfaces import IVRPolicy, SSRPolicy
from halfv.plugins.hookspecs import hookimpl
from halfv.policies.ivr_attention import AttentionPolicy
from halfv.policies.ivr_diversity import DiversityPolicy
from halfv.policies.ivr_halfv import HalfVPolicy
from halfv.policies.ivr_random import RandomPolicy
from halfv.policies.ivr_uniform import UniformPolicy
from halfv.policies.ssr_freeze import Freeze
from halfv.policies.ssr_none import NoSSR
from halfv.policies.ssr_prune import TopKPrune

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
