"""A few-line LoRA for the language model's attention projections.

Training wraps ``q_proj`` / ``v_proj`` of every text decoder layer in :class:`LoRALinear`
(the base weight stays frozen). A checkpoint stores only the low-rank factors; loading
merges them into the base weights (``W += scale * B @ A``), so a loaded model is a plain
transformers model again, which is what halfv's hooks expect.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LoRALinear", "add_lora", "lora_state_dict", "merge_lora", "text_layers"]


class LoRALinear(nn.Module):
    """``base(x) + scale * x @ A^T @ B^T`` with ``B`` initialised to zero.

    Args:
        base: the frozen linear layer.
        rank: rank of the update.
        alpha: scale numerator (``scale = alpha / rank``).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            msg = f"LoRA rank must be >= 1, got {rank}"
            raise ValueError(msg)
        self.base = base
        self.scale = alpha / rank
        w = base.weight
        self.lora_a = nn.Parameter(
            torch.empty(rank, w.shape[1], device=w.device, dtype=torch.float32)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(w.shape[0], rank, device=w.device, dtype=torch.float32)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the frozen layer plus the low-rank update."""
        delta = (x.to(self.lora_a.dtype) @ self.lora_a.T) @ self.lora_b.T
        out: torch.Tensor = self.base(x)
        return out + (self.scale * delta).to(x.dtype)

    def merged(self) -> nn.Linear:
        """Return ``base`` with the update folded into its weight (modified in place)."""
        with torch.no_grad():
            update = self.scale * (self.lora_b @ self.lora_a)
            self.base.weight += update.to(self.base.weight.dtype)
        return self.base


def text_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a zoo VLM's language model (``model.model.language_model``)."""
    layers = getattr(getattr(getattr(model, "model", None), "language_model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        msg = f"{type(model).__name__} has no model.language_model.layers; pass a zoo VLM"
        raise TypeError(msg)
    return layers


def add_lora(
    model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = ("q_proj", "v_proj")
) -> list[nn.Parameter]:
    """Wrap ``targets`` of every text layer's ``self_attn`` in :class:`LoRALinear`.

    Returns:
        The new trainable parameters.
    """
    params: list[nn.Parameter] = []
    for layer in text_layers(model):
        attn = layer.self_attn
        for name in targets:
            base = getattr(attn, name)
            if not isinstance(base, nn.Linear):
                kind = type(base).__name__
                msg = f"self_attn.{name} is {kind}, not nn.Linear (was LoRA added twice?)"
                raise TypeError(msg)
            wrapped = LoRALinear(base, rank, alpha)
            setattr(attn, name, wrapped)
            params += [wrapped.lora_a, wrapped.lora_b]
    return params


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA factors of ``model`` keyed by their state-dict names."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_a", ".lora_b"))}


def merge_lora(model: nn.Module) -> int:
    """Fold every :class:`LoRALinear` of ``model`` into its base layer; return how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                count += 1
    return count
