"""Built-in entropy estimators, registered through the ``register_estimators`` hook.

This module is itself a halfv plugin (listed among the default plugins): its
:func:`register_estimators` hook implementation registers :class:`TMEEstimator` under the
name ``"tme"``, exactly as a third-party plugin would register its own estimators.
"""

from __future__ import annotations

from collections.abc import Callable

from halfv.estimators.tme import TMEEstimator
from halfv.interfaces import EntropyEstimator
from halfv.plugins.hookspecs import hookimpl

__all__ = ["TMEEstimator", "register_estimators"]


@hookimpl
def register_estimators(register: Callable[[type[EntropyEstimator]], None]) -> None:
    """Register the built-in estimators (``"tme"``).

    Args:
        register: the host's callback; called once per estimator class.
    """
    register(TMEEstimator)
