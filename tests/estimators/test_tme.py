"""Tests of the Truncated Matrix Entropy estimator (``halfv.estimators.tme``).

Closed forms use matrices with a constructed spectrum: ``Z = U diag(sqrt(lam)) Vᵀ`` where
``U`` has orthonormal columns orthogonal to the all-ones vector (so centring is a no-op) and
``V`` has orthonormal columns, hence the centred Gram matrix has eigenvalues ``lam`` (plus
zeros). A plain numpy transcription of the method doc is the reference.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import numpy as np
import pluggy
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import Tensor

import halfv.estimators
from halfv.estimators import TMEEstimator
from halfv.interfaces import EntropyEstimator, EntropyResult
from halfv.plugins import hookspecs

FIELDS = ("h1", "h2", "h1_normalized", "erank", "redundancy")
Method = Literal["topk", "kaiser", "rho_kaiser", "energy"]
METHODS: tuple[Method, ...] = get_args(Method)


# --------------------------------------------------------------------------- helpers
def reference(lam: np.ndarray, method: Method = "topk", **options: Any) -> dict[str, float]:
    """Method doc §2, steps 4-7, written plainly in numpy from the eigenvalues."""
    k_fixed, energy, tol = options.get("k", 50), options.get("energy", 0.95), options.get("tol", 0)
    lam = np.sort(np.clip(np.asarray(lam, dtype=np.float64), 0.0, None))[::-1]
    d, tr = len(lam), float(lam.sum())
    if method == "topk":
        k = min(max(1, k_fixed), d)
    elif method == "kaiser":
        k = int((lam > tr / d * (1 + tol)).sum())
    elif method == "rho_kaiser":
        k = int((lam / tr > (1 + tol) / d).sum())
    else:
        hits = np.nonzero(np.cumsum(lam) >= energy * tr)[0]
        k = int(hits[0]) + 1 if len(hits) else d
    k = min(max(k, 1), d)
    p = np.clip(lam[:k] / lam[:k].sum(), 1e-12, None)
    h1 = float(-(p * np.log(p)).sum())
    return {
        "h1": h1,
        "h2": float(-np.log((p**2).sum())),
        "h1_normalized": h1 / math.log(k) if k > 1 else 0.0,
        "erank": math.exp(h1),
        "redundancy": 1.0 - math.exp(h1) / k,
        "k": k,
    }


def constructed(lam: list[float], tokens: int, dim: int, seed: int = 0) -> Tensor:
    """A ``[tokens, dim]`` float64 matrix whose centred Gram matrix has eigenvalues ``lam``."""
    r = len(lam)
    assert r <= tokens - 1, "need rank <= tokens - 1"
    assert r <= dim, "need rank <= dim"
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(tokens, r, generator=gen, dtype=torch.float64)
    u, _ = torch.linalg.qr(a - a.mean(0))
    v, _ = torch.linalg.qr(torch.randn(dim, r, generator=gen, dtype=torch.float64))
    hidden: Tensor = u @ torch.diag(torch.tensor(lam, dtype=torch.float64).sqrt()) @ v.T
    return hidden


def random_hidden(seed: int, *shape: int) -> Tensor:
    """Gaussian ``float64`` data, reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def assert_same(a: EntropyResult, b: EntropyResult, rtol: float = 1e-9) -> None:
    """Equal results (NaN equal to NaN, identical ``k`` and ``ambient_dim``)."""
    for name in FIELDS:
        torch.testing.assert_close(
            getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-9, equal_nan=True, msg=name
        )
    assert torch.equal(a.k, b.k)
    assert a.ambient_dim == b.ambient_dim


def assert_matches(result: EntropyResult, ref: dict[str, float], tol: float = 1e-9) -> None:
    """A single-matrix result equals the numpy reference."""
    assert int(result.k) == ref["k"]
    for name in FIELDS:
        assert float(getattr(result, name)) == pytest.approx(ref[name], rel=tol, abs=tol), name


seeds = st.integers(0, 2**31 - 1)
methods = st.sampled_from(METHODS)
tokens_st, dims_st = st.integers(2, 9), st.integers(1, 9)
scales = st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3)


# --------------------------------------------------------------------------- closed forms
LAM = [8.0, 4.0, 2.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("options", "tokens", "dim", "expected_k"),
    [
        ({"k": 3}, 10, 6, 3),
        ({"k": 10}, 10, 6, 6),  # clipped to d; the zero eigenvalue is floored at 1e-12
        ({"k": 4}, 6, 12, 4),  # T < D: the T x T Gram path
        ({"method": "kaiser"}, 10, 5, 2),  # mean 3.2
        ({"method": "kaiser"}, 12, 10, 3),  # mean 1.6 over d = 10
        ({"method": "kaiser", "tol": 0.5}, 10, 5, 1),  # threshold 4.8
        ({"method": "rho_kaiser"}, 10, 5, 2),
        ({"method": "rho_kaiser", "tol": 0.5}, 6, 12, 1),
        ({"method": "energy", "energy": 0.7}, 10, 6, 2),  # 11.2 <= 12
        ({"method": "energy", "energy": 0.9}, 6, 12, 4),  # 14.4 <= 15
        ({"method": "energy", "energy": 1.0}, 10, 5, 5),
    ],
)
def test_closed_form_on_constructed_spectrum(
    options: dict[str, Any], tokens: int, dim: int, expected_k: int
) -> None:
    hidden = constructed(LAM, tokens, dim)
    result = TMEEstimator(**options).estimate(hidden)
    ref = reference(np.pad(LAM, (0, min(tokens, dim) - len(LAM))), **options)
    assert ref["k"] == expected_k
    assert result.ambient_dim == min(tokens, dim)
    assert_matches(result, ref)


@pytest.mark.parametrize("rank", [1, 2, 3, 5])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_equal_eigenvalues_have_maximal_entropy(rank: int, k: int) -> None:
    result = TMEEstimator(k=k).estimate(constructed([3.0] * rank, 8, 6, seed=rank))
    kept = min(k, 6)
    assert int(result.k) == kept
    if kept <= rank:  # a flat kept spectrum: h1 = h2 = log k, erank = k, no redundancy
        log_k, normalized = math.log(kept), 1.0 if kept > 1 else 0.0
        expected = {"h1": log_k, "h2": log_k, "erank": kept, "redundancy": 0.0}
        for name, value in {**expected, "h1_normalized": normalized}.items():
            assert float(getattr(result, name)) == pytest.approx(value, abs=1e-9), name
    else:  # zeros inside the top k make the spectrum non-flat
        assert float(result.redundancy) > 0.1


def test_kaiser_on_flat_spectrum_keeps_one() -> None:
    result = TMEEstimator(method="kaiser").estimate(constructed([2.0] * 4, 6, 4))
    assert int(result.k) in (1, 2, 3)  # rounding decides "above the mean"; never all four
    assert TMEEstimator(method="kaiser", tol=1e-6).estimate(constructed([2.0] * 4, 6, 4)).k == 1


def test_log_base_two_divides_by_ln2() -> None:
    hidden = constructed(LAM, 10, 6)
    nats = TMEEstimator(k=4).estimate(hidden)
    bits = TMEEstimator(k=4, log_base="2").estimate(hidden)
    for name in ("h1", "h2"):
        torch.testing.assert_close(getattr(bits, name), getattr(nats, name) / math.log(2))
    for name in ("h1_normalized", "erank", "redundancy"):
        torch.testing.assert_close(getattr(bits, name), getattr(nats, name))


# --------------------------------------------------------------------------- properties
@given(seed=seeds, tokens=tokens_st, dim=dims_st, method=methods)
def test_matches_svd_reference_on_both_gram_paths(
    seed: int, tokens: int, dim: int, method: Method
) -> None:
    hidden = random_hidden(seed, tokens, dim)
    centred = (hidden - hidden.mean(0)).numpy()
    d = min(tokens, dim)
    lam = np.linalg.svd(centred, compute_uv=False) ** 2  # min(T, D) = d values
    options: dict[str, Any] = {"method": method, "k": 3, "energy": 0.8}
    result = TMEEstimator(**options).estimate(hidden)
    assert result.ambient_dim == d
    assert_matches(result, reference(lam, **options), tol=1e-7)
    k = int(result.k)
    log_k = math.log(k)
    assert -1e-9 <= float(result.h2) <= float(result.h1) + 1e-9 <= log_k + 1e-6
    assert -1e-9 <= float(result.h1_normalized) <= 1 + 1e-6
    assert 1 - 1e-9 <= float(result.erank) <= k + 1e-6


@given(seed=seeds, tokens=tokens_st, dim=dims_st, method=methods)
def test_invariant_to_token_permutation(seed: int, tokens: int, dim: int, method: Method) -> None:
    hidden = random_hidden(seed, tokens, dim)
    perm = torch.randperm(tokens, generator=torch.Generator().manual_seed(seed + 1))
    est = TMEEstimator(method=method, k=3)
    assert_same(est.estimate(hidden), est.estimate(hidden[perm]))


@given(seed=seeds, tokens=tokens_st, dim=dims_st, scale=scales, clamp=st.booleans())
def test_invariant_to_uniform_scaling(
    seed: int, tokens: int, dim: int, scale: float, clamp: bool
) -> None:
    hidden = random_hidden(seed, tokens, dim)
    est = TMEEstimator(k=3, clamp_gram=clamp)
    assert_same(est.estimate(hidden), est.estimate(hidden * scale), rtol=1e-7)


@given(seed=seeds, tokens=st.integers(2, 9), dim=st.integers(1, 6))
def test_invariant_to_feature_rotation_without_clamp(seed: int, tokens: int, dim: int) -> None:
    hidden = random_hidden(seed, tokens, dim)
    rotation, _ = torch.linalg.qr(random_hidden(seed + 1, dim, dim))
    est = TMEEstimator(k=3)
    assert_same(est.estimate(hidden), est.estimate(hidden @ rotation), rtol=1e-7)


@given(seed=seeds, tokens=st.integers(4, 8), dim=st.integers(1, 4), energy=st.floats(0.05, 0.99))
def test_gram_forms_agree_on_the_same_data(seed: int, tokens: int, dim: int, energy: float) -> None:
    # zero feature columns leave ZZᵀ unchanged and only add zeros to the spectrum of ZᵀZ,
    # but they switch the estimator from the D x D to the T x T Gram matrix.
    hidden = random_hidden(seed, tokens, dim)
    padded = torch.cat([hidden, torch.zeros(tokens, tokens)], dim=1)
    estimators = [TMEEstimator(k=1), TMEEstimator(k=dim)]
    for est in [*estimators, TMEEstimator(method="energy", energy=energy)]:
        narrow, wide = est.estimate(hidden), est.estimate(padded)
        assert (narrow.ambient_dim, wide.ambient_dim) == (dim, tokens)
        for name in FIELDS:
            torch.testing.assert_close(
                getattr(narrow, name), getattr(wide, name), atol=1e-9, rtol=1e-7, msg=name
            )
        assert torch.equal(narrow.k, wide.k)


# --------------------------------------------------------------------------- batches, dtypes
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("tokens", "dim"), [(7, 4), (4, 7)])
def test_batch_equals_per_sample(method: Method, tokens: int, dim: int) -> None:
    batch = random_hidden(3, 4, tokens, dim)
    batch[2] = batch[2, :1]  # identical tokens: degenerate, NaN only in its own row
    est = TMEEstimator(method=method, k=3)
    result = est.estimate(batch)
    assert (result.h1.shape, result.k.shape) == ((4,), (4,))
    for i in range(4):
        single = est.estimate(batch[i])
        assert single.h1.shape == ()
        for name in (*FIELDS, "k"):
            torch.testing.assert_close(
                getattr(result, name)[i], getattr(single, name), equal_nan=True, msg=name
            )
    assert torch.isnan(result.h1).tolist() == [False, False, True, False]
    assert result.k[2] == 0


def test_single_matrix_output_types_and_uncentred_single_token() -> None:
    result = TMEEstimator(center=False).estimate(torch.tensor([[3.0, 4.0]]))  # finite: rank 1
    assert isinstance(result, EntropyResult)
    for name in FIELDS:
        value = getattr(result, name)
        assert (value.shape, value.dtype, value.device.type) == ((), torch.float64, "cpu")
    assert (result.k.shape, result.k.dtype, int(result.k)) == ((), torch.int64, 1)
    assert type(result.ambient_dim) is int
    assert result.ambient_dim == 1
    assert (float(result.h1), float(result.erank)) == (0.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_input_equals_its_float64_cast(dtype: torch.dtype) -> None:
    low = random_hidden(1, 2, 9, 5).to(dtype)
    est = TMEEstimator(k=3)
    exact = est.estimate(low.to(torch.float64))
    result = est.estimate(low)
    for name in FIELDS:
        assert torch.equal(getattr(result, name), getattr(exact, name)), name
    assert torch.equal(result.k, exact.k)


# --------------------------------------------------------------------------- upstream quirk
def test_clamp_gram_changes_results_and_depends_on_the_basis() -> None:
    def h1(hidden: Tensor, clamp: bool) -> float:
        return float(TMEEstimator(k=2, clamp_gram=clamp).estimate(hidden).h1)

    # anti-correlated features [x, -x]: spectrum (2|x|², 0), entropy 0; clamping the
    # negative covariance turns the Gram into diag(|x|², |x|²), entropy log 2.
    x = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, -0.5], dtype=torch.float64)
    hidden = torch.stack([x, -x], dim=1)
    assert h1(hidden, clamp=False) == pytest.approx(0.0, abs=1e-9)
    assert h1(hidden, clamp=True) == pytest.approx(math.log(2))
    # rotated by 45 degrees into [sqrt(2) x, 0]: same spectrum, and now the clamp agrees
    rotated = hidden @ torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64) / math.sqrt(2)
    assert h1(rotated, clamp=False) == pytest.approx(0.0, abs=1e-9)
    assert h1(rotated, clamp=True) == pytest.approx(0.0, abs=1e-9)
    # T < D: the T x T Gram of centred data has rows summing to zero, so negative entries
    tokens_gram = random_hidden(5, 4, 10)
    assert abs(h1(tokens_gram, clamp=False) - h1(tokens_gram, clamp=True)) > 1e-3


def test_clamp_gram_is_a_no_op_on_a_non_negative_gram() -> None:
    # orthonormal, element-wise non-negative V (disjoint supports) -> ZᵀZ = V diag(lam) Vᵀ >= 0
    u, _ = torch.linalg.qr(random_hidden(0, 9, 3) - random_hidden(0, 9, 3).mean(0))
    v = torch.tensor(
        [[0.6, 0, 0], [0.8, 0, 0], [0, 1.0, 0], [0, 0, 0.5], [0, 0, 0.5], [0, 0, math.sqrt(0.5)]],
        dtype=torch.float64,
    )
    hidden = u @ torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ v.T
    assert bool(((hidden.T @ hidden) >= -1e-12).all())
    for method in METHODS:
        plain = TMEEstimator(method=method, k=3).estimate(hidden)
        quirk = TMEEstimator(method=method, k=3, clamp_gram=True).estimate(hidden)
        assert_same(plain, quirk)


# --------------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize(
    "hidden",
    [
        torch.ones(5, 3),  # identical tokens
        torch.full((4, 6), 0.1),  # identical tokens, T < D
        torch.randn(1, 8),  # one token: zero after centring
        torch.zeros(3, 3),
        torch.tensor([[1.0, float("nan")], [2.0, 3.0], [0.0, 1.0]]),
        torch.tensor([[1.0, float("inf")], [2.0, 3.0], [0.0, 1.0]]),
        torch.full((3, 2), 1e300, dtype=torch.float64) * torch.tensor([[1.0], [-1.0], [1.0]]),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_degenerate_input_gives_nan(hidden: Tensor, method: Method) -> None:
    result = TMEEstimator(method=method).estimate(hidden)
    for name in FIELDS:
        assert torch.isnan(getattr(result, name)), name
    assert int(result.k) == 0
    assert TMEEstimator().spectrum(hidden).numel() == 0


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("hidden", "match"),
    [
        (torch.randn(5), r"\[T, D\] or \[B, T, D\], got 1 dimensions"),
        (torch.randn(2, 2, 3, 4), r"got 4 dimensions \(2, 2, 3, 4\)"),
        (torch.randn(0, 4), r"empty dimension, shape \(0, 4\)"),
        (torch.randn(3, 0), r"empty dimension"),
        (torch.randn(0, 3, 4), r"empty dimension"),
        (torch.ones(3, 4, dtype=torch.int64), r"floating dtype, got torch.int64.*hidden.float\(\)"),
        (torch.ones(3, 4, dtype=torch.bool), r"floating dtype, got torch.bool"),
        (torch.ones(3, 4, dtype=torch.complex64), r"floating dtype, got torch.complex64"),
    ],
)
def test_bad_input_raises_value_error(hidden: Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TMEEstimator().estimate(hidden)
    with pytest.raises(ValueError, match=match):
        TMEEstimator().spectrum(hidden)


def test_non_tensor_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"torch.Tensor.*got <class 'numpy.ndarray'>"):
        TMEEstimator().estimate(np.ones((3, 4)))  # type: ignore[arg-type]


BAD_OPTIONS: list[tuple[str, object]] = [("k", 0), ("k", -3), ("k", 2.5), ("k", True)]
BAD_OPTIONS += [("method", "foo"), ("energy", 1.5), ("energy", 0.0), ("energy", math.nan)]
BAD_OPTIONS += [("tol", -0.1), ("tol", math.inf), ("log_base", "10")]


@pytest.mark.parametrize(("field", "value"), BAD_OPTIONS)
def test_invalid_option_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        TMEEstimator(**dict[str, Any]({field: value}))
    assert [error["loc"] for error in info.value.errors()] == [(field,)]
    assert field in str(info.value)
    assert repr(value)[:3] in str(info.value)


def test_defaults_unknown_options_and_immutability() -> None:
    est = TMEEstimator()
    assert (est.k, est.method, est.energy, est.tol) == (50, "topk", 0.95, 0.0)
    assert (est.log_base, est.clamp_gram, est.center, est.name) == ("e", False, True, "tme")
    assert isinstance(est, EntropyEstimator)  # and a frozen model that forbids extra fields:
    with pytest.raises(ValidationError, match="k_fixed"):
        TMEEstimator(k_fixed=4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="frozen"):
        est.k = 4  # type: ignore[misc]


# --------------------------------------------------------------------------- spectrum, plugin
def test_spectrum_batch_pads_rows_with_zeros() -> None:
    batch = torch.stack([constructed(LAM, 10, 7), constructed(LAM[:2], 10, 7), torch.ones(10, 7)])
    spectra = TMEEstimator().spectrum(batch)
    assert spectra.shape == (3, 7)
    for i in range(3):
        row = TMEEstimator().spectrum(batch[i])
        torch.testing.assert_close(spectra[i, : row.numel()], row)
        assert bool((spectra[i, row.numel() :] == 0).all())
    expected = torch.tensor(LAM, dtype=torch.float64) / sum(LAM)
    torch.testing.assert_close(spectra[0, :5], expected)  # then two zero eigenvalues
    assert TMEEstimator().spectrum(batch[0]).shape == (5,)  # dropped in the 2-D form


def test_builtin_plugin_registers_tme() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(halfv.estimators)
    manager.check_pending()
    registered: list[type[EntropyEstimator]] = []
    manager.hook.register_estimators(register=registered.append)
    assert registered == [TMEEstimator]
