"""The one budget rule of halfv.

A visual span of ``n`` tokens keeps ``max(1, floor(n * ratio))`` tokens at every stage, and
``ratio`` is always a fraction of the span's *original* length: ``ssr_keep=0.05`` keeps 5 %
of the tokens the image had before IVR, not 5 % of the IVR survivors. A tiny tolerance
(``1e-9``) absorbs binary rounding, so ``kept_count(100, 0.29) == 29`` rather than 28.
"""

from __future__ import annotations

import math

from halfv.errors import HalfvValueError

__all__ = ["kept_count"]

_ROUNDING_SLACK = 1e-9


def kept_count(n: int, ratio: float) -> int:
    """Number of tokens a span of ``n`` tokens keeps at keep ratio ``ratio``.

    Args:
        n: original span length, ``n >= 1``.
        ratio: keep ratio in ``(0, 1]``.

    Returns:
        ``max(1, floor(n * ratio))``, never more than ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        msg = f"span length n={n!r} must be a positive int"
        raise HalfvValueError(msg)
    if not 0.0 < ratio <= 1.0:
        msg = f"keep ratio {ratio!r} must be in (0, 1]"
        raise HalfvValueError(msg)
    return min(n, max(1, math.floor(n * ratio + _ROUNDING_SLACK)))
