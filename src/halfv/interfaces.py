"""The abstract interfaces halfv is built from.

Five small contracts, each testable on its own:

* :class:`EntropyEstimator` -- hidden states in, an :class:`EntropyResult` out.
* :class:`IVRPolicy` -- the shallow-layer selection: relevance scores and features in,
  sorted kept indices out. Pure tensor maths, no model needed.
* :class:`SSRPolicy` -- what happens to visual tokens from the deep SSR layer on.
* :class:`SaturationDetector` -- decides between ``prune`` and ``freeze`` for a backbone.
* :class:`BackboneAdapter` -- where a transformers model keeps the pieces halfv needs.

Policies and estimators are frozen pydantic models, so their options are validated like
configs (``extra="forbid"``; a bad value names the field, the value and the allowed range).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from halfv.errors import HalfvTypeError, HalfvValueError
from halfv.layers import AttentionParts, LayerSpec, RotaryFn, TokenInputs

if TYPE_CHECKING:
    from halfv.config import PruningConfig
    from halfv.ops.spans import VisualSpans
    from halfv.ops.video import VideoFrames

__all__ = [
    "AttentionParts",
    "BackboneAdapter",
    "EntropyEstimator",
    "EntropyResult",
    "IVRPolicy",
    "LayerSpec",
    "RotaryFn",
    "SSRPolicy",
    "SaturationDetector",
    "SaturationReport",
    "TokenInputs",
]


# --------------------------------------------------------------------------- estimators
@dataclass(frozen=True)
class EntropyResult:
    """Truncated-spectrum statistics of one hidden-state matrix (or a batch of them).

    Every tensor field has the batch shape of the input (a 0-d tensor for one matrix).

    Attributes:
        h1: Shannon entropy of the truncated, renormalised spectrum (the "TME").
        h2: Renyi-2 entropy ``-log sum p^2`` of the same distribution.
        h1_normalized: ``h1 / log k`` in [0, 1] (0 when ``k == 1``).
        erank: effective rank ``exp(h1)``.
        redundancy: ``1 - erank / k``.
        k: number of eigenvalues kept (integer tensor).
        ambient_dim: ``min(tokens, dim)``, the size of the Gram matrix used.
    """

    h1: Tensor
    h2: Tensor
    h1_normalized: Tensor
    erank: Tensor
    redundancy: Tensor
    k: Tensor
    ambient_dim: int


class EntropyEstimator(BaseModel, ABC):
    """Maps hidden states to an entropy summary.

    Lifecycle: construct once with validated options (``get_estimator(name, **options)``),
    then call :meth:`estimate` any number of times; it must not keep state between calls.

    Input: ``[tokens, dim]`` for one matrix, or ``[batch, tokens, dim]`` for a batch of
    equally sized matrices. Output fields have shape ``[]`` or ``[batch]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]

    @abstractmethod
    def estimate(self, hidden: Tensor) -> EntropyResult:
        """Return the entropy statistics of ``hidden``."""


# --------------------------------------------------------------------------- policies
def _check_selection_inputs(scores: Tensor, features: Tensor | None, keep: int) -> None:
    if scores.dim() != 2:
        msg = f"scores must have shape [B, N] or [N], got shape {tuple(scores.shape)}"
        raise HalfvValueError(msg)
    n = scores.shape[1]
    if features is not None and (features.dim() != 3 or features.shape[:2] != scores.shape):
        msg = (
            f"features must have shape [B, N, D] matching scores {tuple(scores.shape)}, "
            f"got {tuple(features.shape)}"
        )
        raise HalfvValueError(msg)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= n:
        msg = (
            f"keep={keep!r} must be an int in [1, N={n}]; use halfv.ops.budget.kept_count(N, ratio)"
        )
        raise HalfvValueError(msg)


class _Selector(BaseModel, ABC):
    """Shared template of IVR and SSR selection: validation, 1-D inputs, sorting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
    #: whether :meth:`select` reads ``scores`` (the pipeline skips the relevance pass if not)
    needs_scores: ClassVar[bool] = True
    #: whether :meth:`select` reads ``features`` (the pipeline skips the final-norm pass if not)
    needs_features: ClassVar[bool] = True

    def select(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        """Choose ``keep`` of the ``N`` tokens.

        Args:
            scores: relevance per token, ``[B, N]`` or ``[N]``.
            features: token features, ``[B, N, D]`` or ``[N, D]``; may be ``None`` when the
                policy has ``needs_features = False``.
            keep: number of tokens to keep, ``1 <= keep <= N``.

        Returns:
            int64 indices, strictly increasing along the last axis, ``[B, keep]`` (or
            ``[keep]`` for 1-D input), on the device of ``scores``.
        """
        squeeze = scores.dim() == 1
        if squeeze:
            scores = scores.unsqueeze(0)
            features = features.unsqueeze(0) if features is not None else None
        if self.needs_features and features is None:
            msg = f"policy {self.name!r} needs features; pass a [B, N, D] tensor"
            raise HalfvValueError(msg)
        _check_selection_inputs(scores, features, keep)
        n = scores.shape[1]
        if keep == n:
            out = torch.arange(n, device=scores.device).expand(scores.shape[0], n).clone()
        else:
            out = self._choose(scores, features, keep).sort(dim=-1).values
        return out[0] if squeeze else out

    @abstractmethod
    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        """Return ``[B, keep]`` distinct indices in any order (inputs already validated)."""


class IVRPolicy(_Selector):
    """Shallow-layer (IVR) token selection: a pure function of scores, features and budget.

    Lifecycle: construct with options (``get_ivr_policy(name, **options)``); the pipeline
    calls :meth:`select` once per visual span group during each prefill. Implementations
    override :meth:`_choose` only; :meth:`select` validates, handles 1-D input and sorts.
    Implementations must not synchronise with the host once per selected token.
    """


class SSRPolicy(_Selector):
    """What happens to the visual tokens from the SSR layer on.

    ``mode`` is one of:

    * ``"prune"`` -- keep ``select(scores, features, keep)`` of the current visual tokens,
      where ``scores`` is RoPE-aware last-token relevance at the layer before the SSR layer;
    * ``"freeze"`` -- keep every visual token but stop updating it: only text rows go
      through the queries, output projection and MLP; text still attends to visual keys;
    * ``"none"`` -- do nothing.

    Lifecycle as :class:`IVRPolicy`. Only ``prune`` policies are asked to :meth:`select`.
    """

    mode: ClassVar[Literal["prune", "freeze", "none"]]

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        msg = f"SSR policy {self.name!r} has mode {self.mode!r} and does not select tokens"
        raise NotImplementedError(msg)


# --------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class SaturationReport:
    """Outcome of a saturation probe.

    Attributes:
        mode: the SSR action the detector recommends for this backbone.
        kl_per_layer: mean KL(P_skip,l || P_full) for each decoder layer ``l``.
        statistic: the number the decision was taken on.
        threshold: the decision boundary for ``statistic``.
        rule: one sentence describing the decision rule.
    """

    mode: Literal["prune", "freeze"]
    kl_per_layer: list[float]
    statistic: float
    threshold: float
    rule: str


class SaturationDetector(ABC):
    """Decides how secondary saturation redundancy shows up in a backbone.

    Lifecycle: stateless; :meth:`detect` runs probe forwards on ``model`` (which it must
    leave unchanged) and returns a :class:`SaturationReport`. Used when a config says
    ``ssr_mode="auto"``.
    """

    @abstractmethod
    def detect(
        self,
        model: nn.Module,
        adapter: BackboneAdapter,
        inputs: Sequence[Mapping[str, Any]],
    ) -> SaturationReport:
        """Probe ``model`` on ``inputs`` (each a processor output dict) and decide."""


# --------------------------------------------------------------------------- adapters
class BackboneAdapter(ABC):
    """Tells halfv where a transformers model keeps what pruning needs.

    Lifecycle: one stateless instance is registered per backbone family through the
    ``register_adapters`` hook, keyed by :attr:`name` and found by the model's
    ``config.model_type`` (any of :attr:`model_types`). :meth:`halfv.apply` asks it for the
    decoder layers, the final norm, the visual token ids and the layer internals, then
    installs removable hooks; the adapter itself never modifies the model.

    Every adapter must carry a :attr:`saturation_detector`; the registry refuses one
    without it.
    """

    #: registry key, lowercase, e.g. ``"llava"``
    name: ClassVar[str]
    #: HF ``config.model_type`` values this adapter handles
    model_types: ClassVar[tuple[str, ...]]
    #: provenance: the transformers code this adapter follows, and tested versions
    follows: ClassVar[str]
    #: decides ``prune`` vs ``freeze`` for ``ssr_mode="auto"``
    saturation_detector: SaturationDetector

    @abstractmethod
    def language_model(self, model: nn.Module) -> nn.Module:
        """The text decoder (the module whose ``layers`` run over the mixed sequence)."""

    def decoder_layers(self, model: nn.Module) -> Sequence[nn.Module]:
        """The decoder layers of :meth:`language_model`, in execution order."""
        layers = getattr(self.language_model(model), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            msg = f"adapter {self.name!r}: the language model has no `layers` ModuleList"
            raise HalfvTypeError(msg)
        return list(layers)

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm applied to the last hidden state before the LM head."""
        norm = getattr(self.language_model(model), "norm", None)
        if not isinstance(norm, nn.Module):
            msg = f"adapter {self.name!r}: the language model has no final `norm`"
            raise HalfvTypeError(msg)
        return norm

    @abstractmethod
    def visual_token_ids(self, model: nn.Module) -> tuple[int, ...]:
        """Token ids that stand for visual features in ``input_ids`` (images and videos)."""

    def video_frames(
        self, model: nn.Module, spans: VisualSpans, inputs: Mapping[str, Any]
    ) -> tuple[VideoFrames, ...]:
        """Where each video's frames are in a prefill (``inputs``: the entry module's keyword
        arguments), for ``PruningConfig.video_budget``. Default ``()``: none known, every
        visual span is its own budget (``halfv.adapters.video`` has helpers)."""
        return ()

    def span_joiners(self, model: nn.Module) -> frozenset[int]:
        """Token ids that join the visual runs on either side into one span.

        Budgets are per span. A processor that splits one image into several runs with
        marker tokens (Pixtral / Mistral3 end every row of patches with ``[IMG_BREAK]``)
        names the marker here, so that each image keeps its budget as a whole rather than
        row by row. Joiners are not visual: they are never pruned. Default: none.
        """
        return frozenset()

    @abstractmethod
    def attention_parts(self, layer: nn.Module) -> AttentionParts:
        """The internals of one decoder layer (for relevance scoring and freezing)."""

    @abstractmethod
    def default_config(self, model: nn.Module) -> PruningConfig:
        """The backbone's default schedule, scaled to this model's depth."""

    def entry_module(self, model: nn.Module) -> nn.Module:
        """The module whose forward receives ``input_ids`` (and opens each call).

        Defaults to ``model.model`` when it exists (the multimodal base model of a
        ``*ForConditionalGeneration``), else ``model`` itself.
        """
        inner = getattr(model, "model", None)
        return inner if isinstance(inner, nn.Module) else model

    def layer_specs(self, model: nn.Module) -> list[LayerSpec]:
        """One :class:`LayerSpec` per decoder layer.

        The default reads ``config.layer_types`` of the language model when it has one,
        and each layer's ``sliding_window`` and output norms (a sandwich block) from
        :meth:`attention_parts`; adapters of models with other layer kinds or their own
        rotary override it.
        """
        lm_config = getattr(self.language_model(model), "config", None)
        types = getattr(lm_config, "layer_types", None)
        specs = []
        for idx, layer in enumerate(self.decoder_layers(model)):
            parts = self.attention_parts(layer)
            window = parts.sliding_window
            layer_type = types[idx] if isinstance(types, (list, tuple)) else None
            kind: Literal["full", "sliding"] = "sliding" if window else "full"
            block: Literal["pre_norm", "sandwich"] = "sandwich" if parts.sandwich else "pre_norm"
            specs.append(
                LayerSpec(kind=kind, window=window or None, block=block, layer_type=layer_type)
            )
        return specs

    def token_inputs(self, model: nn.Module) -> TokenInputs | None:
        """Per-token inputs the text decoder adds after its first layers (:class:`TokenInputs`);
        ``None`` (the default) when it has none."""
        return None

    def num_layers(self, model: nn.Module) -> int:
        """Number of decoder layers."""
        return len(self.decoder_layers(model))
