"""The KL layer-redundancy probe (method doc §6) and the saturation detector built on it.

For each decoder layer ``l`` the probe runs one extra forward in which layer ``l`` does not
update the visual tokens (their output rows are replaced by their input rows; they still
serve as keys and values), and measures ``KL(P_skip,l || P_full)`` of the last-token
next-token distribution. Vicuna-style backbones show tiny KL in deep layers (visual tokens
are inactive: *freeze* them); Qwen-style ones keep a large KL (a few tokens still matter:
*prune* to the top few).

Decision rule: the median KL over layers from ``deep_start * L`` to ``L - 2`` (the last
layer is excluded: skipping it cannot change the last token) is compared with
``threshold``; below means ``freeze``, otherwise ``prune``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from halfv.errors import HalfvValueError
from halfv.interfaces import BackboneAdapter, SaturationDetector, SaturationReport

__all__ = ["KLSaturationDetector", "freeze_onset", "layer_redundancy_kl"]


def _last_logits(model: nn.Module, inputs: Mapping[str, Any]) -> Tensor:
    out = model(**inputs, use_cache=False, logits_to_keep=1)
    return out.logits[:, -1].float()  # type: ignore[no-any-return]


def layer_redundancy_kl(
    model: nn.Module, adapter: BackboneAdapter, inputs: Sequence[Mapping[str, Any]]
) -> list[float]:
    """Mean ``KL(P_skip,l || P_full)`` per decoder layer over ``inputs``.

    Args:
        model: the unmodified model (no halfv handle attached).
        adapter: its backbone adapter.
        inputs: processor outputs (``input_ids`` required), each run as one batch.
    """
    if not inputs:
        msg = "the KL probe needs at least one input (a processor output dict)"
        raise HalfvValueError(msg)
    layers = adapter.decoder_layers(model)
    visual_ids = list(adapter.visual_token_ids(model))
    totals = [0.0] * len(layers)
    with torch.no_grad():
        for batch in inputs:
            ids = batch["input_ids"]
            visual = torch.isin(ids, torch.as_tensor(visual_ids, device=ids.device))
            log_full = F.log_softmax(_last_logits(model, batch), dim=-1)
            for idx, layer in enumerate(layers):
                handle = layer.register_forward_hook(_skip_visual(visual), with_kwargs=True)
                try:
                    log_skip = F.log_softmax(_last_logits(model, batch), dim=-1)
                finally:
                    handle.remove()
                kl = (log_skip.exp() * (log_skip - log_full)).sum(dim=-1).mean()
                totals[idx] += float(kl.clamp_min(0.0))
    return [t / len(inputs) for t in totals]


def _skip_visual(visual: Tensor) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        hidden_in = args[0] if args else kwargs["hidden_states"]
        hidden_out = output[0] if isinstance(output, tuple) else output
        keep = visual.to(hidden_out.device)[..., None]
        patched = torch.where(keep, hidden_in.to(hidden_out.device), hidden_out)
        return (patched, *output[1:]) if isinstance(output, tuple) else patched

    return hook


def freeze_onset(kl_per_layer: Sequence[float], threshold: float, first: int = 1) -> int | None:
    """The first layer from which the visual tokens stay inactive, or ``None``.

    That is the earliest ``l >= first`` such that skipping the visual update of every layer
    ``l .. L-2`` changes the output by a KL below ``threshold`` (layer ``L-1`` is left out,
    as in the decision rule). Freezing from there skips only updates the probe found idle;
    the median rule of :class:`KLSaturationDetector` picks the SSR *type* but not this layer.

    Raises:
        ValueError: ``threshold`` is not a positive finite number, or the curve is too short.
    """
    if not (threshold > 0 and math.isfinite(threshold)):
        msg = f"freeze-onset threshold={threshold!r} must be a positive finite number"
        raise HalfvValueError(msg)
    n = len(kl_per_layer)
    if n < 2:
        msg = f"the KL curve needs at least 2 layers, got {n}"
        raise HalfvValueError(msg)
    onset = None
    for layer in range(n - 2, max(first, 0) - 1, -1):
        if not kl_per_layer[layer] < threshold:
            break
        onset = layer
    return onset


class KLSaturationDetector(SaturationDetector):
    """Chooses ``freeze`` or ``prune`` from the KL layer-redundancy curve.

    Args:
        threshold: median deep-layer KL below which visual tokens count as inactive.
            The default ``1e-3`` sits between the reported Vicuna (1e-6..1e-4) and Qwen2.5
            (1e-2..1e-1) ranges.
        deep_start: first layer of the deep window, as a fraction of depth, in [0, 1).
    """

    def __init__(self, threshold: float = 1e-3, deep_start: float = 0.4) -> None:
        if not (threshold > 0 and math.isfinite(threshold)):
            msg = f"threshold={threshold!r} must be a positive finite number"
            raise HalfvValueError(msg)
        if not 0.0 <= deep_start < 1.0:
            msg = f"deep_start={deep_start!r} must be in [0, 1)"
            raise HalfvValueError(msg)
        self.threshold = threshold
        self.deep_start = deep_start

    def decide(self, kl_per_layer: Sequence[float]) -> SaturationReport:
        """Apply the decision rule to a KL curve (pure; used by tests and ``profile``)."""
        n = len(kl_per_layer)
        if n < 2:
            msg = f"the KL curve needs at least 2 layers, got {n}"
            raise HalfvValueError(msg)
        first = min(math.ceil(self.deep_start * n), n - 2)
        window = list(kl_per_layer[first : n - 1])
        statistic = statistics.median(window)
        mode: Literal["prune", "freeze"] = "freeze" if statistic < self.threshold else "prune"
        rule = (
            f"median KL over layers {first}..{n - 2} = {statistic:.3g}; "
            f"{'<' if mode == 'freeze' else '>='} {self.threshold:g} -> {mode}"
        )
        return SaturationReport(mode, list(kl_per_layer), statistic, self.threshold, rule)

    def detect(
        self,
        model: nn.Module,
        adapter: BackboneAdapter,
        inputs: Sequence[Mapping[str, Any]],
    ) -> SaturationReport:
        """Run the KL probe on ``inputs`` and decide."""
        return self.decide(layer_redundancy_kl(model, adapter, inputs))
