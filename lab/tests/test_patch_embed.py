"""halfv_lab.zoo.patch_embed: the Qwen-VL patch embedding as a GEMM gives the Conv3d's result."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

from halfv_lab.zoo.patch_embed import is_patchify_conv, use_linear_patch_embed


def _patches(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(seed))


def test_linear_forward_and_gradients_match_the_convolution() -> None:
    torch.manual_seed(0)
    conv = Qwen2_5_VisionPatchEmbed(patch_size=14, temporal_patch_size=2, embed_dim=48)
    fast = copy.deepcopy(conv)
    holder = nn.Module()
    holder.patch_embed = fast
    assert use_linear_patch_embed(holder) == 1
    x = _patches(37)
    ref, out = conv(x), fast(x)
    assert out.shape == ref.shape == (37, 48)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    ref.square().sum().backward()
    out.square().sum().backward()
    assert conv.proj.weight.grad is not None
    assert fast.proj.weight.grad is not None
    torch.testing.assert_close(fast.proj.weight.grad, conv.proj.weight.grad, atol=1e-3, rtol=1e-4)
    assert fast.state_dict().keys() == conv.state_dict().keys()  # checkpoints unchanged


def test_only_patchify_convolutions_qualify() -> None:
    assert is_patchify_conv(nn.Conv3d(3, 8, kernel_size=(2, 14, 14), stride=(2, 14, 14)))
    assert not is_patchify_conv(nn.Conv3d(3, 8, kernel_size=3, stride=1))
    assert not is_patchify_conv(nn.Conv3d(3, 8, kernel_size=2, stride=2, padding=1))
    assert not is_patchify_conv(nn.Conv2d(3, 8, kernel_size=14, stride=14))
    model = nn.Sequential(nn.Linear(4, 4))
    assert use_linear_patch_embed(model) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_tower_unchanged(dtype: torch.dtype) -> None:
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 64,
            "vocab_size": 128,
            "rope_parameters": {"rope_type": "default", "mrope_section": [4, 6, 6]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval().to(dtype)
    pixels = _patches(8 * 8, seed=1).to(dtype)
    grid = torch.tensor([[1, 8, 8]])
    with torch.no_grad():
        ref = model.model.visual(pixels, grid_thw=grid)
        assert use_linear_patch_embed(model) == 1
        out = model.model.visual(pixels, grid_thw=grid)
    ref = getattr(ref, "pooler_output", ref)
    out = getattr(out, "pooler_output", out)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
