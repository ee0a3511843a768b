"""Run Qwen-VL patch embeddings as the matrix product they are.

``Qwen2_5_VisionPatchEmbed`` (transformers ``models/qwen2_5_vl/modeling_qwen2_5_vl.py``,
and Qwen2-VL's copy of it) projects each flattened ``C x T x P x P`` patch with an
``nn.Conv3d`` whose stride equals its kernel: no window overlaps another, so the
convolution is one linear map of the flattened patch. cuDNN runs that degenerate
convolution very slowly on some GPU, dtype and cuDNN combinations, forward and backward
(transformers issue #45750; transformers' own ``fusion_config={"patch_embeddings": True}``
only applies when loading with ``from_pretrained``, which the zoo does not use). The zoo's
Qwen2.5-VL tower sees 2,304 patches per 672-px image, so every training step and every
evaluation pays for it.

:func:`use_linear_patch_embed` swaps the forward of each such module for ``F.linear`` on
the same weight viewed as ``[out, C * T * P * P]``. Parameters, state dict and checkpoints
are unchanged; outputs agree with the convolution to float rounding (the sums run in
another order).
"""

from __future__ import annotations

import types

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["is_patchify_conv", "use_linear_patch_embed"]


def is_patchify_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` is a Conv3d that only projects non-overlapping patches."""
    return (
        isinstance(conv, nn.Conv3d)
        and tuple(conv.stride) == tuple(conv.kernel_size)
        and all(p == 0 for p in conv.padding)
        and all(d == 1 for d in conv.dilation)
        and conv.groups == 1
    )


def _linear_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    proj = self.proj
    assert isinstance(proj, nn.Conv3d)  # checked by use_linear_patch_embed
    weight = proj.weight  # [out, C, T, P, P]
    flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
    return F.linear(flat, weight.reshape(weight.shape[0], -1), proj.bias)


def use_linear_patch_embed(model: nn.Module) -> int:
    """Make every patch embedding of ``model`` with a patchify ``proj`` Conv3d use a GEMM.

    Matches modules whose name ends in ``patch_embed`` and whose ``proj`` passes
    :func:`is_patchify_conv`; the forward is replaced on the instance only.

    Returns:
        How many modules were switched (0 for models without such a module).
    """
    count = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] != "patch_embed":
            continue
        if not is_patchify_conv(getattr(module, "proj", None) or nn.Identity()):
            continue
        module.forward = types.MethodType(_linear_forward, module)
        count += 1
    return count
