"""Where a module computes, including modules dispatched or offloaded by accelerate."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["module_device"]


def module_device(module: nn.Module, fallback: torch.device) -> torch.device:
    """The device ``module`` runs on.

    An accelerate hook's ``execution_device`` wins (offloaded weights sit on ``meta`` until
    the hook loads them); then the first parameter's device; then ``fallback``.
    """
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    param = next(module.parameters(), None)
    if param is None or param.device.type == "meta":
        return fallback
    return param.device
