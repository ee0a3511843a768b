"""The fused FPS kernel against the reference loop, on the same Gram matrix."""

from __future__ import annotations

import pytest
import torch

from halfv.ops.fps_kernel import (
    greedy_on_gram,
    greedy_on_gram_torch,
    greedy_on_gram_triton,
    triton_available,
)


def _problem(
    b: int, n: int, k: int, seeds: int, device: str, *, levels: int = 0
) -> tuple[torch.Tensor, ...]:
    """Cosine Gram matrix of random unit vectors; ``levels > 0`` rounds the similarities to
    multiples of ``1 / levels``, so many distances tie exactly (the tie-break is tested)."""
    gen = torch.Generator().manual_seed(n + k + seeds + levels)
    unit = torch.nn.functional.normalize(torch.randn(b, n, 48, generator=gen), dim=-1)
    gram = unit @ unit.transpose(1, 2)
    if levels:
        gram = (gram * levels).round() / levels
    gram = gram.to(device)
    min_dist = torch.full((b, n), 2.0, device=device)
    out = torch.zeros((b, k), dtype=torch.long, device=device)
    for i in range(seeds):
        out[:, i] = i * 3
        min_dist = torch.minimum(min_dist, 1.0 - gram[:, i * 3])
    for i in range(seeds):
        min_dist[:, i * 3] = float("-inf")
    return gram, min_dist, out


def test_reference_loop_picks_distinct_farthest_tokens() -> None:
    gram, min_dist, out = _problem(2, 37, 20, 3, "cpu")
    before = min_dist.clone()
    picks = greedy_on_gram_torch(gram, min_dist, out, 3)
    for row in picks:
        assert len(set(row.tolist())) == 20
    # the first new pick is the farthest token from the seeds
    assert torch.equal(picks[:, 3], before.argmax(dim=1))


def test_dispatch_uses_reference_on_cpu() -> None:
    gram, min_dist, out = _problem(1, 20, 8, 0, "cpu")
    expected = greedy_on_gram_torch(gram, min_dist.clone(), out.clone(), 0)
    assert torch.equal(greedy_on_gram(gram, min_dist, out, 0), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not triton_available(), reason="needs CUDA and Triton")
@pytest.mark.parametrize("speculate", [True, False], ids=["two-candidate", "one-pick"])
@pytest.mark.parametrize(
    ("b", "n", "k", "seeds", "levels"),
    [
        (1, 1000, 250, 0, 0),
        (2, 4096, 1024, 102, 0),
        (1, 3, 3, 1, 0),
        (1, 2, 2, 0, 0),
        (2, 777, 777, 5, 4),  # every token, coarse ties
        (3, 300, 200, 0, 16),
        (1, 5000, 1300, 130, 64),
    ],
)
def test_triton_kernel_equals_reference(
    b: int, n: int, k: int, seeds: int, *, levels: int, speculate: bool
) -> None:
    gram, min_dist, out = _problem(b, n, k, seeds, "cuda", levels=levels)
    expected = greedy_on_gram_torch(gram, min_dist.clone(), out.clone(), seeds)
    got = greedy_on_gram_triton(gram, min_dist.clone(), out.clone(), seeds, speculate=speculate)
    assert torch.equal(got, expected)


def _raw_problem(b: int, n: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inner products of random features of varied norms, and their inverse norms."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, 48, generator=gen) * torch.rand(b, n, 1, generator=gen).add(0.5)
    gram = (feats @ feats.transpose(1, 2)).to(device)
    scale = feats.norm(dim=-1).reciprocal().to(device)
    return gram, scale


def test_scaled_gram_picks_like_the_cosine_gram() -> None:
    """Inner products + inverse norms give the picks of the cosine Gram matrix."""
    gram, scale = _raw_problem(2, 60, 1, "cpu")
    cosine = gram * scale.unsqueeze(-1) * scale.unsqueeze(1)
    min_dist = torch.full((2, 60), 2.0)
    out = torch.zeros((2, 25), dtype=torch.long)
    expected = greedy_on_gram_torch(cosine, min_dist.clone(), out.clone(), 0)
    got = greedy_on_gram(gram, min_dist.clone(), out.clone(), 0, scale=scale)
    assert torch.equal(got, expected)
    assert not torch.equal(greedy_on_gram_torch(gram, min_dist.clone(), out.clone(), 0), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not triton_available(), reason="needs CUDA and Triton")
@pytest.mark.parametrize(("b", "n", "k"), [(1, 1000, 250), (2, 4096, 1024)])
def test_triton_kernel_applies_the_scale(b: int, n: int, k: int) -> None:
    gram, scale = _raw_problem(b, n, n, "cuda")
    min_dist = torch.full((b, n), 2.0, device="cuda")
    out = torch.zeros((b, k), dtype=torch.long, device="cuda")
    expected = greedy_on_gram_torch(gram, min_dist.clone(), out.clone(), 0, scale)
    for warps in (4, 8, 16):
        for speculate in (True, False):
            got = greedy_on_gram_triton(
                gram, min_dist.clone(), out.clone(), 0, scale, num_warps=warps, speculate=speculate
            )
            assert torch.equal(got, expected), (warps, speculate)
