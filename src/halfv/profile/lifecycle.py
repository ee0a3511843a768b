"""Stage detection on a per-layer TME curve: where stage I ends and stage III starts.

Pure functions on plain lists of floats (no torch, no model). A curve has ``L + 1`` values,
one per *slot*: slot ``i < L`` is the hidden state entering decoder layer ``i``, slot ``L``
the output of the last layer (method doc §2). The rule, applied to the whole-sequence TME:

1. **Smoothing.** A running median of three (:func:`median3`; the two end slots are kept).
   It removes a one-slot outlier but leaves plateaus, steps and monotone runs exactly as
   they are, so it never moves a knee of a clean curve. It is used for the knee only: a
   median also flattens a one-slot minimum and would move it, so the minimum is searched
   on the raw curve (which is already a mean over inputs).
2. **Search range.** The knee is searched on the smoothed slots ``0..L-1``, the inputs of
   the layers: the IVR layer is one of them, and the last layer's output (slot ``L``),
   which often jumps as the model turns to next-token prediction, must not pass for a
   descent.
3. **Scale.** ``D`` = the largest drop of that smoothed range below its running maximum
   (:func:`max_drawdown`): the depth of the main descent. It ignores the late rise of
   stage III, which can be many times larger than the descent (LLaVA-1.5: whole-sequence
   TME 0.55 -> 0.42 -> 1.9).
4. **Is there a lifecycle?** Only if ``D > 0`` and ``D >= min_depth * R``, where ``R`` is
   the range (max - min) of the smoothed search range. Otherwise (a flat or rising curve,
   or dips at noise level) nothing is detected: no IVR or SSR layer is suggested, and
   ``halfv calibrate`` keeps the base schedule's layers.
5. **End of stage I** (:func:`find_knee`): the first slot ``i >= 1`` whose smoothed value
   lies more than ``drop * D`` below the running maximum of the smoothed slots ``0..i``.
   Stage I is slots ``0..i-1``. Suggested IVR layer = ``i`` (``1 <= i <= L - 1``): layers
   ``0..i-1`` see every visual token and the prune acts on the first state of the descent.
6. **Entropy minimum** (:func:`find_minimum`): over slots ``IVR + 1 .. L - 1``, the earliest
   slot whose raw value is within ``tie * D`` of the smallest (exact ties and noise-level
   near-ties go to the earliest slot). Suggested SSR layer = that slot, so it lies in
   ``(IVR, L - 1]``. When that window is empty (``IVR >= L - 1``) there is no SSR layer.
7. **SSR mode**: ``KLSaturationDetector().decide(kl).mode`` when a KL curve (one value per
   layer) is given, else ``None``.

Defaults: ``drop = 0.1``, ``tie = 0.02``, ``min_depth = 0.05``. Stages, as inclusive slot
ranges: I = ``0..IVR-1``, II = ``IVR..SSR-1``, III = ``SSR..L`` (II runs to ``L`` when there
is no SSR layer; no stages when nothing is detected).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from halfv.errors import HalfvRuntimeError, HalfvValueError
from halfv.saturation import KLSaturationDetector

__all__ = [
    "DEFAULT_DROP",
    "DEFAULT_MIN_DEPTH",
    "DEFAULT_TIE",
    "Lifecycle",
    "check_thresholds",
    "detect_lifecycle",
    "find_knee",
    "find_minimum",
    "max_drawdown",
    "median3",
]

DEFAULT_DROP = 0.1
"""Knee threshold, as a fraction of the descent depth ``D``."""
DEFAULT_TIE = 0.02
"""Near-tie tolerance of the minimum, as a fraction of ``D``."""
DEFAULT_MIN_DEPTH = 0.05
"""Smallest descent that counts, as a fraction of the smoothed curve's range."""


@dataclass(frozen=True)
class Lifecycle:
    """The three stages found on one TME curve and the layers they suggest.

    Attributes:
        ivr_layer: suggested ``PruningConfig.ivr_layer`` (``1 <= ivr_layer < L``), ``None``
            when no lifecycle was detected.
        ssr_layer: suggested ``ssr_layer`` (``ivr_layer < ssr_layer < L``), ``None`` when
            nothing was detected, or the model is too shallow or the knee too late for an
            SSR stage.
        ssr_mode: ``"freeze"`` or ``"prune"`` from the KL probe, ``None`` without one.
        stage_bounds: inclusive slot ranges ``(first, last)`` of stages I, II and III (only
            I and II when ``ssr_layer`` is ``None``; empty when nothing was detected);
            together they cover ``0..L``.
        rule: the rule and the numbers it was applied to, in one paragraph.
        knee_slot: the knee slot (``None``: no lifecycle detected).
        min_slot: the slot of the entropy minimum (``None`` with ``ssr_layer``).
        depth: the descent depth ``D`` of the smoothed curve.
    """

    ivr_layer: int | None
    ssr_layer: int | None
    ssr_mode: Literal["prune", "freeze"] | None
    stage_bounds: tuple[tuple[int, int], ...]
    rule: str
    knee_slot: int | None = None
    min_slot: int | None = None
    depth: float = 0.0

    @property
    def detected(self) -> bool:
        """Whether the curve showed a lifecycle (a significant descent)."""
        return self.ivr_layer is not None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (``json.dumps`` writes the tuples as lists)."""
        return asdict(self)


def _check_curve(curve: Sequence[float], name: str, length: int | None = None) -> list[float]:
    values = [float(v) for v in curve]
    if length is not None and len(values) != length:
        msg = f"{name} has {len(values)} values, expected {length}: pass one value per layer"
        raise HalfvValueError(msg)
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:
        msg = (
            f"{name} is not finite at index {bad} ({values[bad]}): the estimator failed on that "
            "layer (degenerate hidden states); check the inputs or pick another estimator"
        )
        raise HalfvValueError(msg)
    return values


def median3(curve: Sequence[float]) -> list[float]:
    """Running median of three consecutive values; the first and last values are kept.

    Example:
        >>> median3([1.0, 5.0, 1.0, 1.0, 0.0])
        [1.0, 1.0, 1.0, 1.0, 0.0]
    """
    values = list(curve)
    if len(values) < 3:
        return values
    middle = [sorted(values[i - 1 : i + 2])[1] for i in range(1, len(values) - 1)]
    return [values[0], *middle, values[-1]]


def max_drawdown(curve: Sequence[float]) -> float:
    """Largest drop of ``curve`` below its running maximum (0 for a non-decreasing curve)."""
    peak = -math.inf
    depth = 0.0
    for value in curve:
        peak = max(peak, value)
        depth = max(depth, peak - value)
    return depth


def find_knee(curve: Sequence[float], drop: float = DEFAULT_DROP) -> int | None:
    """First index ``i >= 1`` more than ``drop * max_drawdown(curve)`` below the running max.

    Returns ``None`` when the curve never descends. The index is the first state of the
    main descent; every earlier value is within the threshold of the running maximum.
    """
    depth = max_drawdown(curve)
    if depth <= 0.0:
        return None
    peak = curve[0]
    for i in range(1, len(curve)):
        peak = max(peak, curve[i])
        if peak - curve[i] > drop * depth:
            return i
    return None  # unreachable for drop < 1: the deepest point itself exceeds the threshold


def find_minimum(curve: Sequence[float], first: int, last: int, tolerance: float = 0.0) -> int:
    """Earliest index in ``first..last`` whose value is within ``tolerance`` of their minimum.

    Raises:
        ValueError: the window is empty or outside the curve.
    """
    if not 0 <= first <= last < len(curve):
        msg = f"minimum window {first}..{last} is empty or outside a curve of {len(curve)} values"
        raise HalfvValueError(msg)
    lowest = min(curve[first : last + 1])
    return next(i for i in range(first, last + 1) if curve[i] <= lowest + tolerance)


def check_thresholds(drop: float, tie: float, min_depth: float = DEFAULT_MIN_DEPTH) -> None:
    """Reject a ``drop`` outside ``(0, 1)`` or a ``tie`` or ``min_depth`` outside ``[0, 1)``."""
    if not 0.0 <= min_depth < 1.0:
        msg = f"min_depth={min_depth!r} must be in [0, 1): a fraction of the curve's range"
        raise HalfvValueError(msg)
    if not 0.0 < drop < 1.0:
        msg = f"drop={drop!r} must be in (0, 1): a fraction of the descent depth"
        raise HalfvValueError(msg)
    if not 0.0 <= tie < 1.0:
        msg = f"tie={tie!r} must be in [0, 1): a fraction of the descent depth"
        raise HalfvValueError(msg)


def detect_lifecycle(
    whole: Sequence[float],
    kl: Sequence[float] | None = None,
    *,
    drop: float = DEFAULT_DROP,
    tie: float = DEFAULT_TIE,
    min_depth: float = DEFAULT_MIN_DEPTH,
    detector: KLSaturationDetector | None = None,
    scored_layers: Sequence[int] | None = None,
) -> Lifecycle:
    """Apply the rule of the module docstring to a whole-sequence TME curve.

    Args:
        whole: ``L + 1`` finite values, one per slot (``L >= 2`` decoder layers).
        kl: optional KL layer-redundancy curve, ``L`` finite values (one per layer).
        drop: knee threshold as a fraction of the descent depth, in ``(0, 1)``.
        tie: near-tie tolerance of the minimum as a fraction of the depth, in ``[0, 1)``.
        min_depth: smallest descent that counts, as a fraction of the range, in ``[0, 1)``.
        detector: decides the SSR mode from ``kl`` (default ``KLSaturationDetector()``).
        scored_layers: on a model with linear-attention layers, the layers that may prune
            after a scoring layer (``halfv.runtime.layer_kinds.valid_scored_layers``): the
            IVR layer moves to the first of them at or after the knee, the SSR layer to
            the one nearest the minimum (the earlier on a tie). ``None``: every layer.

    Returns:
        The :class:`Lifecycle`.

    Raises:
        ValueError: a curve is too short, has the wrong length or a non-finite value, or a
            threshold is out of range; the message names it.
    """
    check_thresholds(drop, tie, min_depth)
    values = _check_curve(whole, "the whole-sequence TME curve")
    num_layers = len(values) - 1
    if num_layers < 2:
        msg = (
            f"the TME curve has {len(values)} slots ({num_layers} layer(s)): a lifecycle needs "
            "a model with at least 2 decoder layers (L + 1 >= 3 slots)"
        )
        raise HalfvValueError(msg)
    search = median3(values)[:num_layers]  # the layer inputs, slots 0..L-1
    depth = max_drawdown(search)
    spread = max(search) - min(search)
    parts = [
        f"whole-sequence TME, median-of-3 smoothed, knee searched in slots 0..{num_layers - 1}"
    ]
    mode, mode_rule = _ssr_mode(kl, num_layers, detector)
    if depth <= 0.0 or depth < min_depth * spread:
        parts.append(
            f"descent depth D = {depth:.4g} is below {min_depth:g} of the range {spread:.4g}: "
            "no lifecycle detected (the curve does not descend), no layers suggested"
        )
        parts.append(mode_rule)
        return Lifecycle(None, None, mode, (), "; ".join(parts), None, None, depth)
    knee = find_knee(search, drop)
    if knee is None:  # pragma: no cover - the deepest slot always passes for drop < 1
        msg = f"no knee found although D = {depth} > 0: report this curve as a bug"
        raise HalfvRuntimeError(msg)
    allowed = sorted({int(x) for x in scored_layers}) if scored_layers is not None else None
    ivr = knee  # 1 <= knee <= L - 1 by construction
    if allowed is not None:
        later = [x for x in allowed if knee <= x < num_layers]
        if not later:
            parts.append(
                f"knee at slot {knee}, but no layer from there on prunes after an attention "
                "layer (the rest are linear-attention scoring layers): no layers suggested"
            )
            parts.append(mode_rule)
            return Lifecycle(None, None, mode, (), "; ".join(parts), None, None, depth)
        ivr = later[0]
    moved = " (the first layer from there on whose scoring layer is an attention layer)"
    parts.append(
        f"descent depth D = {depth:.4g} (range {spread:.4g}); first slot more than {drop:g}*D "
        f"below the running maximum: {knee} -> IVR layer {ivr}{moved if ivr != knee else ''}"
    )
    ssr: int | None = None
    minimum: int | None = None
    candidates = [x for x in allowed if ivr < x < num_layers] if allowed is not None else None
    if ivr + 1 <= num_layers - 1 and candidates != []:
        minimum = find_minimum(values, ivr + 1, num_layers - 1, tie * depth)
        ssr = minimum
        if candidates is not None:
            ssr = min(candidates, key=lambda x: (abs(x - minimum), x))
        parts.append(
            f"earliest slot in {ivr + 1}..{num_layers - 1} within {tie:g}*D of the minimum: "
            f"{minimum} -> SSR layer {ssr}"
            + (" (the nearest whose scoring layer is an attention layer)" if ssr != minimum else "")
        )
    elif ivr + 1 <= num_layers - 1:
        parts.append(f"no layer after IVR layer {ivr} prunes after an attention layer: no SSR")
    else:
        parts.append(f"no slot between IVR layer {ivr} and layer {num_layers - 1}: no SSR layer")
    parts.append(mode_rule)
    bounds: tuple[tuple[int, int], ...] = ((0, ivr - 1),)
    bounds += ((ivr, ssr - 1), (ssr, num_layers)) if ssr is not None else ((ivr, num_layers),)
    return Lifecycle(ivr, ssr, mode, bounds, "; ".join(parts), knee, minimum, depth)


def _ssr_mode(
    kl: Sequence[float] | None, num_layers: int, detector: KLSaturationDetector | None
) -> tuple[Literal["prune", "freeze"] | None, str]:
    """The detector's mode and rule for ``kl`` (``None`` and a note without a curve)."""
    if kl is None:
        return None, "SSR mode: not probed (no KL curve)"
    kl_values = _check_curve(kl, "the KL curve", num_layers)
    report = (detector or KLSaturationDetector()).decide(kl_values)
    return report.mode, f"SSR mode: {report.rule}"
