"""Stage detection on synthetic TME curves with known answers (halfv.profile.lifecycle)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from halfv.config import PruningConfig
from halfv.profile.lifecycle import (
    Lifecycle,
    detect_lifecycle,
    find_knee,
    find_minimum,
    max_drawdown,
    median3,
)

NOISE = 0.003  # relative to a descent depth of about 1: far below drop (0.1) and tie (0.02)


@dataclass(frozen=True)
class Synthetic:
    """A piecewise curve and the answers the rule must give on it."""

    curve: list[float]
    ivr: int  # first slot of the descent
    ssr: int  # first slot of the minimum region


@st.composite
def piecewise(draw: st.DrawFn, *, noise: bool = False, second_minimum: bool = False) -> Synthetic:
    """Stage I rise/plateau, descent, flat minimum (ties), rise; optional noise and scale.

    Layout (slots 0..L): stage I is 0..a, non-decreasing, ending at 1 with the slot before
    it in [0.95, 1]; the descent is a+1..m-1, non-increasing, in [0.15, 0.7]; the
    minimum region m..m+w-1 is exactly 0 (w-way tie); the rise after it is increasing from
    >= 0.1 to as much as 4 (above the stage-I top, like LLaVA's stage III). With
    ``second_minimum`` the rise falls back to exactly 0 once more before the end (a tie
    between two separate minima; the earlier must win).
    """
    num_layers = draw(st.integers(5, 40))
    a = draw(st.integers(0, num_layers - 4))
    m = draw(st.integers(a + 2, num_layers - 1))
    w = draw(st.integers(1, min(3, num_layers - m)))
    low = sorted(
        draw(st.lists(st.floats(-2.0, 0.95), min_size=max(0, a - 1), max_size=max(0, a - 1)))
    )
    stage1 = [*low, draw(st.floats(0.95, 1.0)), 1.0][-(a + 1) :]
    descent = sorted(
        draw(st.lists(st.floats(0.15, 0.7), min_size=m - a - 1, max_size=m - a - 1)),
        reverse=True,
    )
    n_rise = num_layers + 1 - m - w
    if second_minimum and n_rise >= 3:
        # a bump no higher than 0.6, the same minimum value 0 again, then the rise
        dip = draw(st.integers(1, n_rise - 2))
        bump = sorted(draw(st.lists(st.floats(0.1, 0.6), min_size=dip, max_size=dip)))
        after = n_rise - dip - 1
        tail = sorted(draw(st.lists(st.floats(0.1, 4.0), min_size=after, max_size=after)))
        rise = [*bump, 0.0, *tail]
    else:
        rise = sorted(draw(st.lists(st.floats(0.1, 4.0), min_size=n_rise, max_size=n_rise)))
    curve = [*stage1, *descent, *([0.0] * w), *rise]
    assert len(curve) == num_layers + 1
    if noise:
        eps = draw(st.lists(st.floats(-NOISE, NOISE), min_size=len(curve), max_size=len(curve)))
        curve = [c + e for c, e in zip(curve, eps, strict=True)]
    scale = draw(st.floats(1e-3, 1e3))
    offset = draw(st.floats(-10.0, 10.0))
    return Synthetic([offset + scale * c for c in curve], a + 1, m)


def _check_known(case: Synthetic) -> None:
    life = detect_lifecycle(case.curve)
    num_layers = len(case.curve) - 1
    assert life.ivr_layer == case.ivr
    assert life.knee_slot == case.ivr
    assert life.ssr_layer == case.ssr
    assert life.min_slot == case.ssr
    assert life.stage_bounds == (
        (0, case.ivr - 1),
        (case.ivr, case.ssr - 1),
        (case.ssr, num_layers),
    )
    assert life.ssr_mode is None


@given(piecewise())
def test_clean_piecewise_curves_give_the_constructed_layers(case: Synthetic) -> None:
    _check_known(case)


@given(piecewise(noise=True))
def test_noise_below_the_thresholds_does_not_move_the_answers(case: Synthetic) -> None:
    _check_known(case)


@given(piecewise(second_minimum=True))
def test_tied_separate_minima_resolve_to_the_earliest(case: Synthetic) -> None:
    _check_known(case)


def _undetected(life: Lifecycle) -> None:
    assert not life.detected
    assert (life.ivr_layer, life.ssr_layer, life.knee_slot, life.min_slot) == (None,) * 4
    assert life.stage_bounds == ()
    assert "no lifecycle detected" in life.rule


@given(st.integers(2, 40), st.floats(-5.0, 5.0))
def test_flat_curve_has_no_lifecycle(num_layers: int, level: float) -> None:
    life = detect_lifecycle([level] * (num_layers + 1))
    _undetected(life)
    assert life.depth == 0.0


@given(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=41), st.floats(-50.0, 50.0))
def test_rising_curve_with_any_last_slot_has_no_lifecycle(steps: list[float], last: float) -> None:
    # a trained SmolLM2 LLaVA gives this: TME rises through the layers, and the last layer's
    # output (slot L) drops; that drop must not pass for stage II
    curve = [sum(steps[: i + 1]) for i in range(len(steps))] + [last]
    _undetected(detect_lifecycle(curve, [1e-2] * (len(curve) - 1)))


def test_shallow_dips_are_not_a_lifecycle_unless_min_depth_allows() -> None:
    # a rising curve with a short descent 5 -> 4.5; smoothed, the peak is clipped to 4.8, so
    # D = 0.2, under 5 % of the smoothed range 7 (the one-slot peak counts as an outlier)
    curve = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.8, 4.6, 4.5, 6.0, 7.0, 8.0]
    _undetected(detect_lifecycle(curve))
    life = detect_lifecycle(curve, min_depth=0.02)
    assert life.depth == pytest.approx(0.2)
    assert (life.ivr_layer, life.ssr_layer) == (7, 8)


@pytest.mark.parametrize("num_layers", [*range(3, 41), 60, 70])
def test_linear_descent_knee_is_first_slot_past_a_tenth(num_layers: int) -> None:
    life = detect_lifecycle([-float(i) for i in range(num_layers + 1)])
    knee = math.floor(0.1 * (num_layers - 1)) + 1  # D = L - 1 (slots 0..L-1): first i > 0.1 D
    assert life.knee_slot == knee
    assert life.ivr_layer == knee
    if life.ivr_layer + 1 > num_layers - 1:
        assert life.ssr_layer is None
        return
    # the window minimum is its last slot, L - 1; slots within 0.02 * D of it tie
    near = math.ceil(num_layers - 1 - 0.02 * (num_layers - 1))
    assert life.ssr_layer == max(life.ivr_layer + 1, near)
    assert (life.ssr_layer == num_layers - 1) == (num_layers <= 50)


def test_one_slot_dip_in_stage_one_is_smoothed_away() -> None:
    curve = [1.0, 1.0, 0.4, 1.0, 1.0, 1.0, 0.6, 0.3, 0.0, 0.2, 0.5, 0.9]
    life = detect_lifecycle(curve)
    assert (life.ivr_layer, life.ssr_layer) == (6, 8)
    raw_knee = find_knee(curve)  # without smoothing the dip would end stage I at slot 2
    assert raw_knee == 2


def test_sharp_one_slot_minimum_is_found_exactly() -> None:
    curve = [1.0, 1.0, 0.8, 0.6, 0.5, 0.1, 0.45, 0.9, 1.5]  # median3 would flatten slot 5
    assert detect_lifecycle(curve).ssr_layer == 5


def test_late_rise_larger_than_the_descent_does_not_hide_the_knee() -> None:
    # LLaVA-1.5-like whole-sequence TME: 0.55 -> 0.42 at 50 % -> 1.9
    curve = [0.55, 0.56, 0.55, 0.52, 0.49, 0.46, 0.44, 0.42, 0.43, 0.8, 1.3, 1.9]
    life = detect_lifecycle(curve)
    assert life.ivr_layer == 3
    assert life.ssr_layer == 7
    assert life.depth == pytest.approx(0.12)  # 0.55 - 0.43: the median lifts slot 7


@given(st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=50))
def test_any_finite_curve_gives_a_valid_schedule(curve: list[float]) -> None:
    life = detect_lifecycle(curve)
    num_layers = len(curve) - 1
    if life.ivr_layer is None:
        _undetected(life)
        return
    assert 1 <= life.ivr_layer <= num_layers - 1
    if life.ssr_layer is None:
        assert life.ivr_layer >= num_layers - 1
    else:
        assert life.ivr_layer < life.ssr_layer <= num_layers - 1
    starts = [b[0] for b in life.stage_bounds]
    ends = [b[1] for b in life.stage_bounds]
    assert starts[0] == 0
    assert ends[-1] == num_layers
    assert all(e + 1 == s for e, s in zip(ends, starts[1:], strict=False))
    assert all(s <= e for s, e in life.stage_bounds)
    mode = "freeze" if life.ssr_layer is not None else "none"
    config = PruningConfig(ivr_layer=life.ivr_layer, ssr_layer=life.ssr_layer, ssr_mode=mode)
    config.check_depth(num_layers)


@pytest.mark.parametrize(
    ("kl_level", "mode"), [(1e-6, "freeze"), (1e-4, "freeze"), (2e-2, "prune"), (0.3, "prune")]
)
def test_ssr_mode_comes_from_the_kl_detector(kl_level: float, mode: str) -> None:
    curve = [1.0, 1.0, 0.5, 0.2, 0.0, 0.3, 0.9]
    life = detect_lifecycle(curve, [kl_level] * 6)
    assert life.ssr_mode == mode
    assert "median KL" in life.rule
    flat = detect_lifecycle([1.0] * 7, [kl_level] * 6)  # probed even without a lifecycle
    assert (flat.detected, flat.ssr_mode) == (False, mode)


@pytest.mark.parametrize(
    ("curve", "kl", "kwargs", "needle"),
    [
        ([1.0, 0.5], None, {}, "at least 2 decoder layers"),
        ([1.0, math.nan, 0.5, 0.2], None, {}, "index 1"),
        ([1.0, 0.5, 0.2, 0.7], [0.1, 0.1], {}, "expected 3"),
        ([1.0, 0.5, 0.2, 0.7], [0.1, math.inf, 0.1], {}, "KL curve is not finite"),
        ([1.0, 0.5, 0.2, 0.7], None, {"drop": 0.0}, "drop=0.0"),
        ([1.0, 0.5, 0.2, 0.7], None, {"tie": 1.0}, "tie=1.0"),
        ([1.0, 0.5, 0.2, 0.7], None, {"min_depth": -0.1}, "min_depth=-0.1"),
    ],
)
def test_bad_input_names_the_problem(
    curve: list[float], kl: list[float] | None, kwargs: dict[str, float], needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        detect_lifecycle(curve, kl, **kwargs)


def test_helpers() -> None:
    assert median3([3.0, 0.0, 3.0, 2.0, 1.0]) == [3.0, 3.0, 2.0, 2.0, 1.0]
    assert median3([1.0, 2.0]) == [1.0, 2.0]
    assert max_drawdown([1.0, 3.0, 2.0, 5.0, 1.5, 4.0]) == 3.5
    assert find_knee([1.0, 1.0, 1.0]) is None
    assert find_minimum([5.0, 1.0, 1.005, 0.999, 3.0], 1, 3, tolerance=0.01) == 1
    assert find_minimum([5.0, 1.0, 1.005, 0.999, 3.0], 1, 3) == 3
    with pytest.raises(ValueError, match="empty"):
        find_minimum([1.0, 2.0], 2, 1)
