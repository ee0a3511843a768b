"""The last-token relevance kernel maths: GQA without repeated keys, both code paths."""

from __future__ import annotations

import pytest
import torch

from halfv.relevance import _logits


def _reference(q: torch.Tensor, k: torch.Tensor, sample_of_row: torch.Tensor) -> torch.Tensor:
    """Keys repeated per query head, float64 products and sums."""
    r = q.shape[1] // k.shape[1]
    keys = k.double().repeat_interleave(r, dim=1)  # head h reads KV head h // r
    return (q.double()[sample_of_row] * keys).sum(dim=-1)


@pytest.mark.parametrize(("batch", "heads", "kv_heads"), [(1, 4, 4), (2, 6, 2), (3, 8, 1)])
def test_logits_match_repeated_keys(batch: int, heads: int, kv_heads: int) -> None:
    gen = torch.Generator().manual_seed(batch * 10 + heads)
    q = torch.randn((batch, heads, 16), generator=gen).bfloat16()
    k = torch.randn((40, kv_heads, 16), generator=gen).bfloat16()
    sample_of_row = torch.randint(0, batch, (40,), generator=gen)
    got = _logits(q, k, sample_of_row)
    assert got.dtype == torch.float32
    assert got.shape == (40, heads)
    torch.testing.assert_close(got.double(), _reference(q, k, sample_of_row), rtol=1e-6, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_half_logits_use_the_exact_product_gemm(batch: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    q = torch.randn((batch, 28, 128), generator=gen).bfloat16()
    k = torch.randn((4096, 4, 128), generator=gen).bfloat16()
    rows = torch.randint(0, batch, (4096,), generator=gen)
    got = _logits(q.cuda(), k.cuda(), rows.cuda()).cpu()
    # exact products, float32 sums in either order: equal to float64 up to float32 rounding
    torch.testing.assert_close(got.double(), _reference(q, k, rows), rtol=1e-5, atol=1e-4)
