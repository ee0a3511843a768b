"""Tests of halfv.ops.selection against slow pure-Python/numpy references."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import halfv.ops.selection
from halfv.ops.selection import (
    anchor_count,
    farthest_point_sampling,
    grid_seeds,
    halfv_select,
    random_indices,
    topk_indices,
    uniform_indices,
)
from references import ref_fps, ref_min_dist, ref_topk, unit64
from strategies import selection_inputs, visual_layouts


@contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Record every Python-level tensor-to-host read (item, tolist, bool/int/float/index)."""
    calls: list[str] = []
    patched: dict[str, Callable[..., Any]] = {}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def wrapper(self: Tensor, *args: Any, _n: str = name, _f: Any = original) -> Any:
            calls.append(_n)
            return _f(self, *args)

        patched[name] = original
        setattr(torch.Tensor, name, wrapper)
    try:
        yield calls
    finally:
        for name, original in patched.items():
            setattr(torch.Tensor, name, original)


# --------------------------------------------------------------------------- topk
@given(selection_inputs(tied_scores=None))
def test_topk_matches_reference_with_ties(inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, _, keep = inputs
    out = topk_indices(scores, keep)
    assert out.shape == (scores.shape[0], keep)
    assert out.dtype == torch.int64
    for b in range(scores.shape[0]):
        assert out[b].tolist() == ref_topk(scores[b], keep)


def test_topk_ties_go_to_lower_index() -> None:
    scores = torch.tensor([[1.0, 5.0, 5.0, 0.0, 5.0, 5.0]])
    assert topk_indices(scores, 3).tolist() == [[1, 2, 4]]
    flat = torch.zeros(1, 5000)
    assert topk_indices(flat, 7).tolist() == [list(range(7))]


@pytest.mark.parametrize("k", [0, 5, -1, True, 2.0])
def test_topk_rejects_bad_k(k: Any) -> None:
    with pytest.raises(ValueError, match=r"k=.* must be an int in \[1, 4\]"):
        topk_indices(torch.zeros(2, 4), k)


def test_topk_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"scores must have shape \[B, N\].*\(4,\)"):
        topk_indices(torch.zeros(4), 1)


# --------------------------------------------------------------------------- FPS
def test_argmax_returns_first_maximum() -> None:
    """The FPS tie-breaking rule rests on this documented torch.argmax behaviour."""
    assert int(torch.argmax(torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0]))) == 1
    big = torch.zeros(3, 200_000)
    big[:, 150_000:] = 1.0
    big[1, 77_777] = 1.0
    assert big.argmax(dim=-1).tolist() == [150_000, 77_777, 150_000]


@given(selection_inputs(max_tokens=40, dtype=torch.float64), st.data())
def test_fps_matches_reference(inputs: tuple[Tensor, Tensor, int], data: st.DataObject) -> None:
    _, features, k = inputs
    batch, n, _ = features.shape
    n_seeds = data.draw(st.integers(0, k), label="n_seeds")
    mask = torch.zeros(batch, n, dtype=torch.bool)
    seeds: list[list[int]] = []
    for b in range(batch):
        row = sorted(data.draw(st.permutations(range(n)), label=f"perm{b}")[:n_seeds])
        mask[b, row] = True
        seeds.append(row)
    out = farthest_point_sampling(features, k, mask if n_seeds else None)
    assert out.shape == (batch, k)
    for b in range(batch):
        assert out[b].tolist() == ref_fps(features[b], k, seeds[b])


@given(selection_inputs(max_tokens=48))
def test_fps_float32_picks_are_farthest(inputs: tuple[Tensor, Tensor, int]) -> None:
    """In float32 every pick is a farthest remaining token, up to float32 rounding."""
    _, features, k = inputs
    out = farthest_point_sampling(features, k)
    for b in range(features.shape[0]):
        unit = unit64(features[b])
        picks = out[b].tolist()
        assert len(set(picks)) == k
        assert picks[0] == 0
        for i in range(1, k):
            rest = [u for u in range(unit.shape[0]) if u not in picks[:i]]
            best = max(ref_min_dist(unit, u, picks[:i]) for u in rest)
            assert ref_min_dist(unit, picks[i], picks[:i]) >= best - 1e-5


def test_fps_without_seeds_starts_at_zero_and_breaks_ties_low() -> None:
    same = torch.ones(2, 9, 4)
    assert farthest_point_sampling(same, 5).tolist() == [[0, 1, 2, 3, 4]] * 2
    zeros = torch.zeros(1, 6, 3)  # zero vectors stay zero: distance 1 to everything
    assert farthest_point_sampling(zeros, 6).tolist() == [[0, 1, 2, 3, 4, 5]]


def test_fps_duplicates_tie_to_lower_index() -> None:
    base = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.8, 0.2], [-1.0, 0.0]])
    # from token 0 the farthest are the identical tokens 2 and 4: 2 wins
    assert farthest_point_sampling(base.unsqueeze(0), 2).tolist() == [[0, 2]]


def test_fps_seeds_come_first_in_index_order() -> None:
    features = torch.randn(2, 12, 5, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, [9, 4]] = True
    mask[1, [0, 11]] = True
    out = farthest_point_sampling(features, 6, mask)
    assert out[:, :2].tolist() == [[4, 9], [0, 11]]
    for b in range(2):
        assert len(set(out[b].tolist())) == 6
    only_seeds = farthest_point_sampling(features, 2, mask)
    assert only_seeds.tolist() == [[4, 9], [0, 11]]


def test_fps_seed_distances_are_chunked_correctly(monkeypatch: pytest.MonkeyPatch) -> None:
    features = torch.randn(2, 40, 6, generator=torch.Generator().manual_seed(10))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, ::5] = True
    mask[1, 1::5] = True
    expected = farthest_point_sampling(features, 20, mask)
    monkeypatch.setattr(halfv.ops.selection, "_SEED_CHUNK", 3)
    assert torch.equal(farthest_point_sampling(features, 20, mask), expected)
    for b in range(2):
        seeds = mask[b].nonzero().flatten().tolist()
        assert expected[b].tolist() == ref_fps(features[b].double(), 20, seeds)


def test_fps_upcasts_half_precision() -> None:
    features = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(4))
    low = features.to(torch.bfloat16)
    expected = farthest_point_sampling(low.float(), 10)
    assert torch.equal(farthest_point_sampling(low, 10), expected)
    half = features.half()
    assert torch.equal(farthest_point_sampling(half, 10), farthest_point_sampling(half.float(), 10))
    # cosines to token 0 are 0.99805 and 0.99754: one bf16 value, distinct in float32
    close = torch.tensor([[[1.0, 0.0], [1.0, 0.0625], [1.0, 0.0703125]]], dtype=torch.bfloat16)
    assert farthest_point_sampling(close, 2).tolist() == [[0, 2]]


def test_fps_non_finite_features_still_give_distinct_picks() -> None:
    features = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(5))
    features[0, 3] = float("nan")
    features[0, 6] = float("inf")
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 3] = True
    for seed_mask in (None, mask):
        out = farthest_point_sampling(features, 10, seed_mask)
        assert sorted(out[0].tolist()) == list(range(10))


def test_fps_rejects_bad_inputs() -> None:
    features = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"features must have shape \[B, N, D\].*unsqueeze"):
        farthest_point_sampling(features[0], 2)
    with pytest.raises(TypeError, match=r"floating-point.*torch\.int64"):
        farthest_point_sampling(torch.ones(1, 5, 3, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"k=6 must be an int in \[1, 5\]"):
        farthest_point_sampling(features, 6)
    with pytest.raises(ValueError, match=r"seed_mask must be a bool tensor of shape \(2, 5\)"):
        farthest_point_sampling(features, 2, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"seed_mask must be a bool tensor of shape \(2, 5\)"):
        farthest_point_sampling(features, 2, torch.zeros(2, 4, dtype=torch.bool))
    uneven = torch.zeros(2, 5, dtype=torch.bool)
    uneven[0, 1] = True
    with pytest.raises(ValueError, match=r"same number of seeds.*between 0 and 1"):
        farthest_point_sampling(features, 2, uneven)
    full = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"at most k=2.*between 5 and 5"):
        farthest_point_sampling(features, 2, full)


def test_fps_loop_never_reads_tensors_on_host() -> None:
    features = torch.randn(2, 300, 16, generator=torch.Generator().manual_seed(6))
    scores = torch.randn(2, 300, generator=torch.Generator().manual_seed(7))
    with count_host_syncs() as calls:
        farthest_point_sampling(features, 200)
        halfv_select(scores, features, 200, 0.25)
    assert calls == []
    mask = torch.zeros(2, 300, dtype=torch.bool)
    mask[:, :10] = True
    with count_host_syncs() as calls:
        farthest_point_sampling(features, 250, mask)
    assert calls == ["tolist"]  # the seed count, once per call


def test_count_host_syncs_detects_item() -> None:
    """The sync detector itself works (so the test above can fail)."""
    with count_host_syncs() as calls:
        torch.ones(1).item()
        bool(torch.ones(1))
    assert calls == ["item", "__bool__"]


@pytest.mark.gpu
def test_fps_has_no_cuda_sync() -> None:
    features = torch.randn(2, 512, 64, device="cuda")
    scores = torch.randn(2, 512, device="cuda")
    torch.cuda.synchronize()
    with warnings.catch_warnings():  # torch warns that the debug mode is a prototype
        warnings.filterwarnings("ignore", "Synchronization debug mode", UserWarning)
        torch.cuda.set_sync_debug_mode("error")
    try:
        halfv_select(scores, features, 128, 0.1)
        farthest_point_sampling(features, 128)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_fps_picks_like_the_float64_reference(dtype: torch.dtype) -> None:
    """Half-precision features take the exact-product Gram path; the picks must match a
    float64 CPU run on the same (rounded) features, with and without anchors."""
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(2, 700, 96, generator=gen).to(dtype)
    scores = torch.rand(2, 700, generator=gen)
    reference = features.double()
    for keep, share in ((175, 0.0), (175, 0.2)):
        expected = halfv_select(scores.double(), reference, keep, share)
        got = halfv_select(scores.cuda(), features.cuda(), keep, share)
        assert torch.equal(got.cpu(), expected), (dtype, share)


@pytest.mark.gpu
def test_sync_debug_mode_catches_item() -> None:
    """The CUDA sync detector itself works (so the test above can fail)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Synchronization debug mode", UserWarning)
        torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            torch.ones(1, device="cuda").item()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------- halfv_select
@given(
    selection_inputs(max_tokens=40, dtype=torch.float64, tied_scores=None),
    st.floats(0.0, 1.0),
)
def test_halfv_select_is_anchors_then_fps(inputs: tuple[Tensor, Tensor, int], share: float) -> None:
    scores, features, keep = inputs
    out = halfv_select(scores, features, keep, share)
    n_anchors = math.floor(keep * share + 1e-9)
    assert out.shape == (scores.shape[0], keep)
    for b in range(scores.shape[0]):
        anchors = ref_topk(scores[b], n_anchors)
        assert out[b, :n_anchors].tolist() == anchors
        assert out[b].tolist() == ref_fps(features[b], keep, anchors)


def test_halfv_select_extremes() -> None:
    gen = torch.Generator().manual_seed(8)
    scores = torch.randn(2, 50, generator=gen)
    features = torch.randn(2, 50, 6, generator=gen)
    assert torch.equal(halfv_select(scores, features, 20, 1.0), topk_indices(scores, 20))
    assert torch.equal(
        halfv_select(scores, features, 20, 0.0), farthest_point_sampling(features, 20)
    )


def test_halfv_select_rejects_bad_inputs() -> None:
    scores, features = torch.zeros(2, 6), torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match=r"attention_share=1\.5 must be in"):
        halfv_select(scores, features, 3, 1.5)
    with pytest.raises(ValueError, match=r"keep=7 must be an int in \[1, 6\].*kept_count"):
        halfv_select(scores, features, 7, 0.1)
    with pytest.raises(ValueError, match=r"features \(2, 5, 3\) must have the \[B, N\]"):
        halfv_select(scores, features[:, :5], 3, 0.1)


@given(
    selection_inputs(max_tokens=40, dtype=torch.float64, tied_scores=None),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_halfv_select_with_grid_is_anchors_grid_then_fps(
    inputs: tuple[Tensor, Tensor, int], share: float, grid_share: float
) -> None:
    scores, features, keep = inputs
    out = halfv_select(scores, features, keep, share, grid_share)
    n_anchors = math.floor(keep * share + 1e-9)
    n_grid = min(math.floor(keep * grid_share + 1e-9), keep - n_anchors)
    assert out.shape == (scores.shape[0], keep)
    for b in range(scores.shape[0]):
        anchors = ref_topk(scores[b], n_anchors)
        free = [i for i in range(scores.shape[1]) if i not in anchors]
        grid = [free[(2 * i + 1) * len(free) // (2 * n_grid)] for i in range(n_grid)]
        row = out[b].tolist()
        assert row[: n_anchors + n_grid] == anchors + grid
        assert row == ref_fps(features[b], keep, anchors + grid)
        assert len(set(row)) == keep


def test_grid_share_zero_is_the_published_selection_and_one_is_a_stride() -> None:
    gen = torch.Generator().manual_seed(9)
    scores = torch.randn(3, 64, generator=gen)
    features = torch.randn(3, 64, 5, generator=gen)
    assert torch.equal(
        halfv_select(scores, features, 16, 0.25, 0.0), halfv_select(scores, features, 16, 0.25)
    )
    stride = halfv_select(scores, features, 16, 0.0, 1.0)
    assert torch.equal(stride, uniform_indices(64, 16).expand(3, 16))


def test_grid_seeds_skip_anchors_and_reject_too_many() -> None:
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, [0, 1]] = True
    mask[1, [8, 9]] = True
    assert grid_seeds(mask, 2, 4).tolist() == [[3, 5, 7, 9], [1, 3, 5, 7]]
    assert grid_seeds(mask, 2, 0).shape == (2, 0)
    with pytest.raises(ValueError, match=r"count=9 must be an int in \[0, 8\]"):
        grid_seeds(mask, 2, 9)


def test_grid_seeds_read_nothing_back_from_the_device() -> None:
    features = torch.randn(2, 300, 16, generator=torch.Generator().manual_seed(6))
    scores = torch.randn(2, 300, generator=torch.Generator().manual_seed(7))
    with count_host_syncs() as calls:
        halfv_select(scores, features, 120, 0.1, 0.5)
    assert calls == []


def test_anchor_count() -> None:
    assert anchor_count(100, 0.29) == 29  # int(100 * 0.29) would be 28
    assert anchor_count(144, 0.1) == 14
    assert anchor_count(9, 0.0) == 0
    assert anchor_count(9, 1.0) == 9
    assert anchor_count(0, 0.5) == 0
    with pytest.raises(ValueError, match="keep=-1 must be a non-negative int"):
        anchor_count(-1, 0.5)
    with pytest.raises(ValueError, match=r"attention_share=-0.1 must be in \[0, 1\]"):
        anchor_count(3, -0.1)


# --------------------------------------------------------------------------- baselines
@given(st.integers(1, 5000), st.data())
def test_uniform_indices_formula(n: int, data: st.DataObject) -> None:
    keep = data.draw(st.integers(1, n), label="keep")
    out = uniform_indices(n, keep)
    assert out.dtype == torch.int64
    assert out.tolist() == [(2 * i + 1) * n // (2 * keep) for i in range(keep)]
    assert bool((out[1:] > out[:-1]).all())
    assert int(out[0]) >= 0
    assert int(out[-1]) < n


def test_uniform_indices_examples_and_errors() -> None:
    assert uniform_indices(10, 3).tolist() == [1, 5, 8]
    assert uniform_indices(7, 7).tolist() == list(range(7))
    with pytest.raises(ValueError, match=r"keep=11 must be an int in \[1, 10\]"):
        uniform_indices(10, 11)
    with pytest.raises(ValueError, match="n=0 must be an int >= 1"):
        uniform_indices(0, 1)


def test_random_indices() -> None:
    def draw(batch: int, n: int, keep: int, seed: int) -> Tensor:
        return random_indices(batch, n, keep, torch.Generator().manual_seed(seed))

    out = draw(3, 40, 10, 0)
    assert out.shape == (3, 10)
    for row in out.tolist():
        assert len(set(row)) == 10
        assert all(0 <= i < 40 for i in row)
    assert torch.equal(out, draw(3, 40, 10, 0))
    assert not torch.equal(out, draw(3, 40, 10, 1))
    assert not torch.equal(out[0], out[1])  # rows of one call are independent draws
    assert torch.equal(draw(3, 40, 25, 0)[:, :10], out)  # smaller keep = prefix
    assert sorted(draw(1, 40, 40, 2)[0].tolist()) == list(range(40))
    with pytest.raises(ValueError, match=r"keep=41 must be an int in \[1, 40\]"):
        draw(1, 40, 41, 0)
    with pytest.raises(ValueError, match="batch=0 must be an int >= 1"):
        draw(0, 40, 4, 0)


# --------------------------------------------------------------------------- strategies
@given(visual_layouts(max_spans=4))
def test_visual_layouts_are_disjoint_and_inside(layout: tuple[int, list[tuple[int, int]]]) -> None:
    total, spans = layout
    assert total >= 1
    end = -1
    for start, length in spans:
        assert length >= 1
        assert start > end  # sorted, disjoint, at least one text token between spans
        end = start + length - 1
    assert end < total - 1  # the last token (the relevance query) is text


@given(selection_inputs(max_batch=2, max_tokens=8, max_dim=3, tied_scores=True))
def test_selection_inputs_shapes(inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, features, keep = inputs
    assert features.shape[:2] == scores.shape
    assert 1 <= keep <= scores.shape[1]
    assert torch.equal(scores, scores.round())
