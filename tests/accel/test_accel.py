"""halfv.accel.fast_vision: one attention call per layer in Qwen2.5-VL's vision tower.

The padded backend must give the stock tower's output (per-window SDPA calls) within
float32 round-off, on ragged windows (grids that are not a multiple of the window) and on
several images at once; the handle must put the stock forward back.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import halfv
from halfv.accel import fast_vision, padded_window_attention, varlen_available
from tiny import build_llava, build_qwen


def _tower(depth: int = 3) -> nn.Module:
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel,
    )

    vision = {
        "depth": depth, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
        "out_hidden_size": 48, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [depth - 1],
        "hidden_act": "silu",
    }  # fmt: skip
    cfg = Qwen2_5_VLConfig(vision_config=vision).vision_config
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg, attn_implementation="sdpa")
    for p in tower.parameters():  # bigger than the default init, so attention is not flat
        nn.init.normal_(p, 0.0, 0.2)
    return tower.eval()


def _run(tower: nn.Module, pixels: Tensor, grid: Tensor) -> Tensor:
    out: Any = tower(pixels, grid_thw=grid)
    pooled: Tensor = getattr(out, "pooler_output", out)
    return pooled


# grids in patches: ragged windows (20 x 12: merged 10 x 6, windows of 4 x 4 merged),
# whole windows (16 x 16), and two images of different sizes in one call
GRIDS = [[[1, 20, 12]], [[1, 16, 16]], [[1, 20, 12], [1, 8, 16]]]


@pytest.mark.parametrize("grids", GRIDS, ids=["ragged", "whole", "two-images"])
@torch.no_grad()
def test_padded_equals_the_stock_tower(grids: list[list[int]]) -> None:
    tower = _tower()
    grid = torch.tensor(grids)
    pixels = torch.randn(int(grid.prod(1).sum()), 3 * 2 * 14 * 14)
    stock = _run(tower, pixels, grid)
    with fast_vision(tower, backend="padded") as fast:
        got = _run(tower, pixels, grid)
    assert fast.backends_used == {"padded"}
    torch.testing.assert_close(got, stock, rtol=1e-5, atol=1e-5)
    # the windows matter: attention over the whole sequence gives something else
    assert not torch.allclose(stock, _run(_tower(depth=1), pixels, grid), atol=1e-3)


def test_padded_window_attention_is_per_window_sdpa() -> None:
    gen = torch.Generator().manual_seed(3)
    cu = torch.tensor([0, 5, 16, 18, 30], dtype=torch.int32)
    q, k, v = (torch.randn(30, 3, 8, generator=gen) for _ in range(3))
    want = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        window = [t[a:b].transpose(0, 1) for t in (q, k, v)]
        want.append(F.scaled_dot_product_attention(*window, scale=0.3).transpose(0, 1))
    got = padded_window_attention(q, k, v, cu, scale=0.3)
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_handle_restores_the_stock_forward() -> None:
    tower = _tower()
    grid = torch.tensor([[1, 20, 12]])
    pixels = torch.randn(240, 3 * 2 * 14 * 14)
    stock = _run(tower, pixels, grid)
    handle = fast_vision(tower)
    assert all("forward" in vars(m) for m in handle.modules)
    with pytest.raises(halfv.UnsupportedModelError, match="twice"):
        fast_vision(tower)
    handle.remove()
    handle.remove()  # idempotent
    assert not any("forward" in vars(m) for m in tower.modules())
    assert torch.equal(_run(tower, pixels, grid), stock)


def test_refuses_models_without_a_qwen_tower() -> None:
    with pytest.raises(halfv.UnsupportedModelError, match=r"Qwen2\.5-VL"):
        fast_vision(build_llava(layers=2).model)
    with pytest.raises(ValueError, match="backend"):
        fast_vision(_tower(), backend="flash")


def test_varlen_refused_where_it_cannot_run() -> None:
    tower = _tower(depth=1)
    pixels = torch.randn(64, 3 * 2 * 14 * 14)
    with fast_vision(tower, backend="varlen"), pytest.raises(halfv.UnsupportedModelError):
        _run(tower, pixels, torch.tensor([[1, 8, 8]]))


@torch.no_grad()
def test_generate_with_halfv_and_fast_vision_matches_halfv_alone() -> None:
    tiny = build_qwen(layers=4, grid=20)  # 20 x 20 patches: ragged windows
    inputs = tiny.build([[6, "img", 5]], 0)
    kwargs: dict[str, Any] = {"max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False}
    with halfv.apply(tiny.model):
        want = tiny.model.generate(**inputs, **kwargs)
    with fast_vision(tiny.model) as fast, halfv.apply(tiny.model):
        got = tiny.model.generate(**inputs, **kwargs)
    assert fast.backends_used == {"padded"}
    assert torch.equal(got, want)


@pytest.mark.skipif(not varlen_available(), reason="needs CUDA and torch.nn.attention.varlen")
@torch.no_grad()
def test_varlen_matches_stock_on_cuda() -> None:
    tower = _tower().to("cuda", torch.bfloat16)
    grid = torch.tensor([[1, 20, 12], [1, 16, 16]], device="cuda")
    pixels = torch.randn(496, 3 * 2 * 14 * 14, device="cuda", dtype=torch.bfloat16)
    stock = _run(tower, pixels, grid)
    with fast_vision(tower) as fast:
        got = _run(tower, pixels, grid)
    assert fast.backends_used == {"varlen"}
    torch.testing.assert_close(got.float(), stock.float(), rtol=0.05, atol=0.05)


@torch.no_grad()
def test_auto_falls_back_to_padded_when_the_varlen_kernel_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tower = _tower()
    grid = torch.tensor([[1, 20, 12]])
    pixels = torch.randn(240, 3 * 2 * 14 * 14)
    stock = _run(tower, pixels, grid)
    with fast_vision(tower) as fast:

        def refuse(*args: Any, **kwargs: Any) -> Tensor:
            msg = "no kernel for these shapes"
            raise RuntimeError(msg)

        fast._varlen = refuse
        monkeypatch.setattr(fast, "_use_varlen", lambda q, s: fast._varlen is not None)
        got = _run(tower, pixels, grid)
    assert fast.backends_used == {"padded"}
    assert fast.varlen_error is not None
    assert "no kernel" in fast.varlen_error
    torch.testing.assert_close(got, stock, rtol=1e-5, atol=1e-5)
