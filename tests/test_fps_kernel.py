"""The fused FPS kernel against the reference loop, on the same Gram matrix."""

from __future__ import annotations

import pytest
import torch

from halfv.fps_kernel import (
    greedy_on_gram,
    greedy_on_gram_torch,
    greedy_on_gram_triton,
    triton_available,
)


def _problem(b: int, n: int, k: int, seeds: int, device: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(n + k + seeds)
    unit = torch.nn.functional.normalize(torch.randn(b, n, 48, generator=gen), dim=-1)
    gram = (unit @ unit.transpose(1, 2)).to(device)
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
@pytest.mark.parametrize(
    ("b", "n", "k", "seeds"), [(1, 1000, 250, 0), (2, 4096, 1024, 102), (1, 3, 3, 1)]
)
def test_triton_kernel_equals_reference(b: int, n: int, k: int, seeds: int) -> None:
    gram, min_dist, out = _problem(b, n, k, seeds, "cuda")
    expected = greedy_on_gram_torch(gram, min_dist.clone(), out.clone(), seeds)
    got = greedy_on_gram_triton(gram, min_dist.clone(), out.clone(), seeds)
    assert torch.equal(got, expected)
