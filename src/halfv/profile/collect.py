"""Model wiring of ``halfv profile``: per-layer hidden states, TME per token group, KL curve.

For each input (one processor output dict, batch size 1) :func:`capture_slots` runs one
forward with hooks on the decoder layers and keeps ``L + 1`` hidden states ("slots"): the
input of every layer and the output of the last one, each passed through the adapter's
final norm (method doc §2). :func:`slot_entropies` then computes the TME (or any
:class:`~halfv.interfaces.EntropyEstimator`) of three row groups per slot:

* ``whole``: every token of the prompt (padding excluded);
* ``visual``: tokens whose id is one of ``adapter.visual_token_ids(model)``;
* ``text``: the rest (prefix and suffix around the image, including image start/end tags).

:func:`collect_curves` averages the three curves over inputs and, unless asked not to,
adds the KL layer-redundancy curve of :func:`halfv.saturation.layer_redundancy_kl`
(``L`` extra forwards per input), with a rich progress bar over the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from halfv.errors import HalfvRuntimeError, HalfvValueError
from halfv.interfaces import BackboneAdapter, EntropyEstimator
from halfv.saturation import layer_redundancy_kl

__all__ = ["GROUPS", "ProfileCurves", "capture_slots", "collect_curves", "slot_entropies"]

GROUPS: tuple[str, ...] = ("whole", "visual", "text")
"""Token groups whose TME is measured per slot."""


@dataclass(frozen=True)
class ProfileCurves:
    """Per-slot TME curves averaged over inputs, and the KL curve.

    Attributes:
        whole: mean ``h1`` of all prompt tokens per slot (``L + 1`` values).
        visual: mean ``h1`` of the visual tokens per slot.
        text: mean ``h1`` of the text tokens per slot. Every mean skips the inputs whose
            matrix the estimator found degenerate (NaN, e.g. a single text token); a slot
            where all inputs were degenerate is NaN.
        kl: mean ``KL(P_skip,l || P_full)`` per layer (``L`` values), ``None`` if skipped.
        visual_tokens: visual tokens of each input.
        text_tokens: text tokens of each input.
    """

    whole: list[float]
    visual: list[float]
    text: list[float]
    kl: list[float] | None
    visual_tokens: list[int]
    text_tokens: list[int]

    @property
    def n_inputs(self) -> int:
        """Number of inputs averaged."""
        return len(self.visual_tokens)

    @property
    def num_layers(self) -> int:
        """Decoder layers ``L`` (the curves have ``L + 1`` slots)."""
        return len(self.whole) - 1


def _check_batch(inputs: Mapping[str, Any], index: int) -> Tensor:
    ids = inputs.get("input_ids")
    if not isinstance(ids, Tensor) or ids.dim() != 2:
        msg = f"input {index} has no input_ids tensor of shape [1, T]: pass processor outputs"
        raise HalfvValueError(msg)
    if ids.shape[0] != 1:
        msg = (
            f"input {index} has batch size {ids.shape[0]}: profiling runs one sample per "
            "forward (method doc §2); split the batch into single-sample dicts"
        )
        raise HalfvValueError(msg)
    return ids


def capture_slots(model: nn.Module, adapter: BackboneAdapter, inputs: Mapping[str, Any]) -> Tensor:
    """Final-normed hidden states entering each decoder layer, plus the last layer's output.

    Args:
        model: the unmodified model (no halfv handle attached), in eval mode.
        adapter: its backbone adapter.
        inputs: one processor output dict with batch size 1.

    Returns:
        ``[L + 1, T, D]`` float32 tensor on the model's device.

    Raises:
        ValueError: the inputs are not a single sample.
    """
    _check_batch(inputs, 0)
    layers = adapter.decoder_layers(model)
    slots: list[Tensor | None] = [None] * (len(layers) + 1)

    def pre_hook(index: int) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            slots[index] = hidden.detach()

        return hook

    def last_hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        slots[-1] = hidden.detach()

    handles = [
        layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    handles.append(layers[-1].register_forward_hook(last_hook))
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i, s in enumerate(slots) if s is None]
    if missing:
        msg = (
            f"decoder layer hooks did not fire for slots {missing}: adapter "
            f"{adapter.name!r} does not return the layers the model runs"
        )
        raise HalfvRuntimeError(msg)
    norm = adapter.final_norm(model)
    with torch.no_grad():
        normed = [norm(s)[0].float() for s in slots if s is not None]
    return torch.stack(normed)


def slot_entropies(
    slots: Tensor, visual: Tensor, valid: Tensor, estimator: EntropyEstimator
) -> dict[str, list[float]]:
    """TME (``h1``) of the whole, visual and text rows of every slot.

    Args:
        slots: ``[S, T, D]`` hidden states.
        visual: ``[T]`` bool, the visual rows.
        valid: ``[T]`` bool, the rows that are real tokens (not padding).
        estimator: the entropy estimator; one batched call per group.

    Returns:
        ``{"whole": [...], "visual": [...], "text": [...]}``, ``S`` floats each (NaN for an
        empty or degenerate group).
    """
    rows = {"whole": valid, "visual": visual & valid, "text": ~visual & valid}
    out: dict[str, list[float]] = {}
    for group, mask in rows.items():
        if not bool(mask.any()):
            out[group] = [math.nan] * slots.shape[0]
            continue
        result = estimator.estimate(slots[:, mask.to(slots.device), :])
        out[group] = [float(v) for v in result.h1.reshape(-1).tolist()]
    return out


class _NanMean:
    """Per-slot mean over inputs that skips NaN values."""

    def __init__(self) -> None:
        self.total: list[float] = []
        self.count: list[int] = []

    def add(self, values: Sequence[float]) -> None:
        if not self.total:
            self.total = [0.0] * len(values)
            self.count = [0] * len(values)
        for i, v in enumerate(values):
            if math.isfinite(v):
                self.total[i] += v
                self.count[i] += 1

    def result(self) -> list[float]:
        return [t / c if c else math.nan for t, c in zip(self.total, self.count, strict=True)]


def _progress(console: Console | None, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )


def collect_curves(
    model: nn.Module,
    adapter: BackboneAdapter,
    inputs: Sequence[Mapping[str, Any]],
    estimator: EntropyEstimator,
    *,
    with_kl: bool = True,
    console: Console | None = None,
    progress: bool = True,
) -> ProfileCurves:
    """Average the per-slot TME curves over ``inputs``; optionally the KL curve too.

    Args:
        model: the unmodified model, in eval mode.
        adapter: its backbone adapter.
        inputs: processor output dicts, one sample each.
        estimator: entropy estimator (e.g. ``halfv.get_estimator("tme")``).
        with_kl: also run the KL probe (``L`` extra forwards per input).
        console: where the progress bar is drawn (default: rich's stdout console).
        progress: show a rich progress bar over the inputs.

    Raises:
        ValueError: no inputs, a batch larger than 1, or an input without visual tokens.
    """
    if not inputs:
        msg = "no inputs to profile: pass at least one processor output dict"
        raise HalfvValueError(msg)
    visual_ids = torch.as_tensor(adapter.visual_token_ids(model))
    means = {group: _NanMean() for group in GROUPS}
    kl_sum: list[float] | None = None
    n_visual: list[int] = []
    n_text: list[int] = []
    with _progress(console, progress) as bar:
        task = bar.add_task("profiling", total=len(inputs))
        for index, batch in enumerate(inputs):
            ids = _check_batch(batch, index)
            visual = torch.isin(ids[0], visual_ids.to(ids.device))
            mask = batch.get("attention_mask")
            valid = mask[0].bool() if isinstance(mask, Tensor) else torch.ones_like(visual)
            if not bool((visual & valid).any()):
                msg = (
                    f"input {index} has no visual tokens (ids {visual_ids.tolist()}): every "
                    "profiled prompt needs an image"
                )
                raise HalfvValueError(msg)
            slots = capture_slots(model, adapter, batch)
            groups = slot_entropies(slots, visual.cpu(), valid.cpu(), estimator)
            for group, values in groups.items():
                means[group].add(values)
            if with_kl:
                kl = layer_redundancy_kl(model, adapter, [batch])
                kl_sum = kl if kl_sum is None else [a + b for a, b in zip(kl_sum, kl, strict=True)]
            n_visual.append(int((visual & valid).sum()))
            n_text.append(int((~visual & valid).sum()))
            bar.advance(task)
    n = len(inputs)
    return ProfileCurves(
        whole=means["whole"].result(),
        visual=means["visual"].result(),
        text=means["text"].result(),
        kl=None if kl_sum is None else [v / n for v in kl_sum],
        visual_tokens=n_visual,
        text_tokens=n_text,
    )
