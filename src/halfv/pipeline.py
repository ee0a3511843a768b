"""Composition: config + adapter + policies + estimator, applied to a model.

>>> handle = halfv.apply(model)             # the backbone's default schedule
>>> with halfv.apply(model, config) as h:   # or scoped: the model is restored on exit
...     out = model.generate(**inputs, max_new_tokens=32)
...     print(h.stats.kept_visual_per_layer())

``apply`` never changes weights or classes; :meth:`PruningHandle.remove` takes every hook
out again, leaving the model exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from torch import Tensor, nn

from halfv.config import PruningConfig, coerce_config
from halfv.errors import ConfigError, HalfvError
from halfv.flops import FlopsReport, flops_from_token_counts
from halfv.flops.model_specs import ModelDims
from halfv.interfaces import (
    BackboneAdapter,
    EntropyEstimator,
    IVRPolicy,
    SaturationReport,
    SSRPolicy,
)
from halfv.ops.cost import CostModel
from halfv.plugins import get_adapter_for, get_ivr_policy, get_ssr_policy
from halfv.runtime import PruningRuntime, find_runtime
from halfv.runtime.plan import PruneStats

__all__ = ["Pipeline", "PruningHandle", "apply", "handle_of"]


@dataclass(frozen=True)
class Pipeline:
    """A resolved schedule: the components a config names, ready to attach to a model.

    Build it with :meth:`from_config` (names resolved through the plugin registry) or
    directly from component objects for programmatic composition.
    """

    config: PruningConfig
    adapter: BackboneAdapter
    ivr_policy: IVRPolicy
    ssr_policy: SSRPolicy
    #: not used to prune (only ``halfv profile`` measures entropy, and it resolves
    #: ``config.estimator`` itself); ``None`` unless given, see :meth:`from_config`
    estimator: EntropyEstimator | None = None

    @classmethod
    def from_config(cls, config: PruningConfig, adapter: BackboneAdapter) -> Pipeline:
        """Resolve the policy names of ``config`` through the plugin registry.

        The IVR policy gets ``config.ivr_policy_options`` and the SSR policy
        ``config.ssr_policy_options``, each validated by the policy itself.
        ``ssr_mode='auto'`` resolves to the ``prune`` policy here; :meth:`attach` replaces it
        with the detector's choice. The entropy estimator is not resolved: pruning does not
        use it (resolve it with ``halfv.get_estimator(config.estimator,
        **config.estimator_options)``).
        """
        ssr_policy = get_ssr_policy(config.ssr_policy_name, **config.ssr_policy_options)
        if config.ssr_mode not in (ssr_policy.mode, "auto"):
            msg = (
                f"SSR policy {config.ssr_policy_name!r} has mode {ssr_policy.mode!r} but the "
                f"config says ssr_mode={config.ssr_mode!r}: set ssr_policy to a policy of that "
                "mode, or drop ssr_mode"
            )
            raise ConfigError(msg)
        return cls(
            config=config,
            adapter=adapter,
            ivr_policy=get_ivr_policy(config.ivr_policy, **config.ivr_policy_options),
            ssr_policy=ssr_policy,
        )

    def attach(
        self,
        model: nn.Module,
        calibration_inputs: Sequence[Mapping[str, Any]] | None = None,
        *,
        cost_model: CostModel | str | Path | None = None,
    ) -> PruningHandle:
        """Install the schedule on ``model`` and return its handle.

        Args:
            model: a transformers model the adapter understands.
            calibration_inputs: processor outputs for the saturation detector; required
                when ``config.ssr_mode == 'auto'``.
            cost_model: the cost model the per-call gate asks (``config.min_gain``): a
                :class:`~halfv.ops.cost.CostModel` or the path of a calibration file;
                ``None`` for the calibration shipped with halfv.
        """
        if find_runtime(model) is not None:
            msg = (
                "halfv is already applied to this model: call handle.remove() (or "
                "halfv.handle_of(model).remove()) before applying again"
            )
            raise HalfvError(msg)
        self.config.check_depth(self.adapter.num_layers(model))
        report = None
        ssr_policy = self.ssr_policy
        if self.config.ssr_mode == "auto":
            if not calibration_inputs:
                msg = (
                    "ssr_mode='auto' needs calibration_inputs (a list of processor outputs) for "
                    "the saturation detector; or set ssr_mode to 'prune' or 'freeze'"
                )
                raise ConfigError(msg)
            report = self.adapter.saturation_detector.detect(
                model, self.adapter, calibration_inputs
            )
            ssr_policy = get_ssr_policy(report.mode)
        runtime = PruningRuntime(
            model,
            self.adapter,
            self.config,
            ivr_policy=self.ivr_policy,
            ssr_policy=ssr_policy,
            ssr_mode=ssr_policy.mode,
            cost_model=resolve_cost_model(cost_model),
        )
        handle = PruningHandle(self, runtime, report)
        runtime.handle = handle
        runtime.install()
        return handle


class PruningHandle:
    """A live schedule on a model. Use it as a context manager or call :meth:`remove`.

    The handle stays readable after :meth:`remove`: :attr:`stats` and :meth:`flops`
    report the last pruned prefill it served. A deep copy (or pickle) of an applied model
    carries its own handle, found with :func:`handle_of`.

    Attributes:
        pipeline: the components in use.
        saturation: the detector's report when ``ssr_mode='auto'`` was resolved.
    """

    def __init__(
        self, pipeline: Pipeline, runtime: PruningRuntime, saturation: SaturationReport | None
    ) -> None:
        self.pipeline = pipeline
        self.saturation = saturation
        self._runtime = runtime
        self._removed = False

    @property
    def config(self) -> PruningConfig:
        """The schedule."""
        return self.pipeline.config

    @property
    def model(self) -> nn.Module:
        """The model the schedule is (or was) applied to."""
        return self._runtime.model

    @property
    def ssr_mode(self) -> str:
        """The SSR action in force (``auto`` resolved)."""
        return self._runtime.ssr_mode

    @property
    def stats(self) -> PruneStats | None:
        """Token counts of the last pruned prefill (``None`` before the first one).

        With several threads, each reads its own last prefill (or, in a thread that ran
        none, the last one of any thread).
        """
        return self._runtime.last_stats

    def flops(self, sample: int = 0) -> FlopsReport:
        """Prefill FLOPs of the last pruned call for one sample, pruned vs unpruned.

        Counts the rows each layer really processed (``stats.layers``), the relevance
        passes and the farthest-point selection, in both the FastV field convention and
        the exact variant (see :mod:`halfv.flops`).
        """
        stats = self.stats
        if stats is None:
            msg = "no pruned prefill has run through this handle yet: call the model first"
            raise HalfvError(msg)
        runtime = self._runtime
        cfg = self.config
        visual = stats.visual_tokens[sample]
        ivr_ran = stats.gate is None or "ivr" not in stats.gate.skipped
        relevance: dict[int, int] = {}
        if ivr_ran and runtime.ivr_policy.needs_scores:
            relevance[cfg.ivr_layer - 1] = visual
        if stats.ssr_mode == "prune" and runtime.ssr_policy.needs_scores and cfg.ssr_layer:
            relevance[cfg.ssr_layer - 1] = stats.layers[cfg.ssr_layer - 1].visual[sample]
        kept = stats.layers[cfg.ivr_layer].visual[sample]
        selection = (
            {cfg.ivr_layer: visual * kept} if ivr_ran and runtime.ivr_policy.needs_features else {}
        )
        return flops_from_token_counts(
            ModelDims.from_config(runtime.model.config),
            [layer.query_rows[sample] for layer in stats.layers],
            [layer.sequence[sample] for layer in stats.layers],
            relevance_keys=relevance,
            selection_pairs=selection,
        )

    @property
    def decode_steps(self) -> int:
        """Decode steps served from the last pruned prefill's cache."""
        plan = self._runtime.last_plan
        return 0 if plan is None else plan.decode_steps

    @property
    def decode_without_cudnn(self) -> bool:
        """Whether pruned decode steps on CUDA run SDPA without its cuDNN backend (default
        True: cuDNN builds an execution graph for every new KV length, and a pruned
        model's cache has several; see :mod:`halfv.runtime.sdpa_backends`). Set it to
        False to leave the backend choice to PyTorch."""
        return self._runtime.decode_without_cudnn

    @decode_without_cudnn.setter
    def decode_without_cudnn(self, value: bool) -> None:
        self._live().decode_without_cudnn = bool(value)

    @property
    def active(self) -> bool:
        """False once removed."""
        return not self._removed

    def _live(self) -> PruningRuntime:
        if self._removed:
            msg = "this halfv handle was removed; call halfv.apply(model) again"
            raise HalfvError(msg)
        return self._runtime

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Temporarily run the model unpruned (hooks stay installed but do nothing).

        This switches the schedule off for every thread using the model.
        """
        runtime = self._live()
        runtime.enabled = False
        try:
            yield
        finally:
            runtime.enabled = True

    @contextmanager
    def visual_positions(self, mask: Tensor) -> Iterator[None]:
        """Name the visual rows of the next call that passes ``inputs_embeds``.

        Without ``input_ids`` halfv cannot tell visual rows from text, so such a call is
        not pruned. Inside this block, the next call of this thread is pruned with
        ``mask`` (``[batch, seq]`` bool, True on visual rows) as its visual positions::

            embeds = model.get_input_embeddings()(ids)  # ... merged with image features
            with handle.visual_positions(ids == model.config.image_token_id):
                model(inputs_embeds=embeds, attention_mask=mask)
        """
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            msg = f"visual_positions needs a [batch, seq] bool tensor, got {shape}"
            raise HalfvError(msg)
        runtime = self._live()
        runtime.supply_visual_mask(mask.bool())
        try:
            yield
        finally:
            runtime.supply_visual_mask(None)

    def remove(self) -> None:
        """Take every hook out; the model is exactly as before :func:`apply`. Idempotent."""
        if self._removed:
            return
        self._runtime.remove()
        self._removed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"PruningHandle({self.pipeline.adapter.name}, {state}, config={self.config!r})"


_DEFAULT_COST_MODEL: list[CostModel] = []


def resolve_cost_model(cost_model: object) -> CostModel:
    """A :class:`CostModel` from what ``apply`` accepts (``None``: the shipped one, read once)."""
    if isinstance(cost_model, CostModel):
        return cost_model
    if isinstance(cost_model, str | Path):
        return CostModel.load(cost_model)
    if cost_model is not None:
        msg = f"cost_model={cost_model!r} is not a CostModel or a calibration file path"
        raise ConfigError(msg)
    if not _DEFAULT_COST_MODEL:
        _DEFAULT_COST_MODEL.append(CostModel.default())
    return _DEFAULT_COST_MODEL[0]


def handle_of(model: nn.Module) -> PruningHandle | None:
    """The handle of the schedule applied to ``model``, or ``None``.

    Also finds the handle of a deep copy or unpickled copy of an applied model: the copy
    carries its own hooks and handle, and ``handle_of(copy).remove()`` takes them out.
    """
    runtime = find_runtime(model)
    if runtime is None:
        return None
    handle: PruningHandle | None = runtime.handle
    return handle


def apply(
    model: nn.Module,
    config: PruningConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    adapter: BackboneAdapter | None = None,
    calibration_inputs: Sequence[Mapping[str, Any]] | None = None,
    cost_model: CostModel | str | Path | None = None,
) -> PruningHandle:
    """Prune the visual tokens of ``model`` during prefill, per ``config``.

    Args:
        model: a transformers VLM (``LlavaForConditionalGeneration``,
            ``LlavaNextForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``,
            ``InternVLForConditionalGeneration``, or one a plugin adapter handles).
        config: a :class:`PruningConfig`, a dict of its fields, a path to a ``.json`` or
            ``.toml`` file, or ``None`` for the adapter's default schedule for this backbone.
        adapter: use this adapter instead of looking one up by ``config.model_type``.
        calibration_inputs: processor outputs for ``ssr_mode='auto'``.
        cost_model: what the per-call gate asks whether a stage pays (see
            ``config.min_gain``): a :class:`~halfv.ops.cost.CostModel` or a calibration
            file; ``None`` for the one shipped with halfv.

    Returns:
        A :class:`PruningHandle` (a context manager).

    Raises:
        UnknownComponentError: no adapter for the model type (the message lists them).
        ConfigError: invalid config (names the file, the field, the value and the fix), or
            layers beyond the model's depth; ``ConfigTypeError`` when ``config`` is not one
            of the accepted types. Both are ``ValueError``s.
        UnsupportedModelError: an attention implementation other than sdpa/eager.
    """
    parsed = None if config is None else coerce_config(config)  # config errors come first
    adapter = adapter or get_adapter_for(model)
    resolved = adapter.default_config(model) if parsed is None else parsed
    resolved.check_depth(adapter.num_layers(model))
    return Pipeline.from_config(resolved, adapter).attach(
        model, calibration_inputs, cost_model=cost_model
    )
