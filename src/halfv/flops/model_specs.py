"""Language-model dimensions and default HalfV schedules of the shipped models.

A :class:`ModelDims` holds the few numbers the FLOPs accounting needs (hidden size, MLP
width, depth, attention heads). :func:`get_model_spec` returns them together with the
model's default :class:`~halfv.config.PruningConfig`, taken from the HalfV release
(method doc section 7). Only dimensions are shipped -- no weights -- so FLOPs estimates
work offline. :meth:`ModelDims.from_config` reads the same numbers from any transformers
config, for models that are not listed here.

InternVL3-8B is not configured in the HalfV release. Its language model is Qwen2.5-7B,
and the lifecycle positions (IVR end of stage I, SSR at the entropy minimum) and the SSR
form ("extreme token sparsity" rather than "layer-level inactivity") are properties of
the language backbone (method doc section 3), so it inherits the Qwen2.5-VL-7B schedule.
That is an assumption, not a measurement: ``halfv profile`` recalibrates the layers on the
real model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from halfv.adapters import InternVLAdapter, LlavaAdapter, LlavaNextAdapter, Qwen25VLAdapter
from halfv.config import PruningConfig
from halfv.errors import HalfvValueError

__all__ = ["MODEL_SPECS", "ModelDims", "ModelSpec", "get_model_spec", "known_models"]


@dataclass(frozen=True)
class ModelDims:
    """Dimensions of a decoder-only language model, as used by :mod:`halfv.flops`.

    Attributes:
        name: a label for reports (a short name or the checkpoint path).
        hidden_size: model width ``d``.
        intermediate_size: MLP width ``m`` (SwiGLU: gate and up are ``d x m``, down ``m x d``).
        num_layers: number of decoder layers ``L``.
        num_heads: query heads ``H``.
        num_kv_heads: key/value heads (``H`` without grouped-query attention).
        head_dim: width of one head; ``H * head_dim`` is usually ``d``.
        vocab_size: vocabulary size (the LM head is not counted in prefill FLOPs).
    """

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    def __post_init__(self) -> None:
        for field_name in (
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "vocab_size",
        ):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"ModelDims.{field_name}={value!r} must be a positive int"
                raise HalfvValueError(msg)
        if self.num_heads % self.num_kv_heads:
            msg = (
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads="
                f"{self.num_kv_heads}: grouped-query attention needs num_heads % num_kv_heads == 0"
            )
            raise HalfvValueError(msg)

    @classmethod
    def from_config(cls, config: object, name: str | None = None) -> ModelDims:
        """Read the language-model dimensions from a transformers config.

        Multimodal configs are unwrapped first: the first of ``config.get_text_config()``,
        ``config.text_config`` and ``config.llm_config`` (InternVL remote code, which
        ``get_text_config`` does not know) that has a ``hidden_size``, else ``config`` itself.

        Args:
            config: a ``transformers.PretrainedConfig`` (or anything with the same attributes).
            name: label for reports; defaults to ``config.name_or_path`` or its ``model_type``.

        Raises:
            ValueError: a required attribute is missing; the message names it.
        """
        get_text_config = getattr(config, "get_text_config", None)
        candidates = [get_text_config()] if callable(get_text_config) else []
        candidates += [getattr(config, sub, None) for sub in ("text_config", "llm_config")]
        text = next((c for c in candidates if getattr(c, "hidden_size", None)), config)

        def need(attr: str) -> int:
            value = getattr(text, attr, None)
            if value is None:
                msg = (
                    f"config {type(text).__name__} has no {attr!r}: pass a decoder language-model "
                    "config (or a multimodal config whose text config has it), or build "
                    "ModelDims by hand"
                )
                raise HalfvValueError(msg)
            return int(value)

        hidden = need("hidden_size")
        heads = need("num_attention_heads")
        kv_heads = getattr(text, "num_key_value_heads", None)
        head_dim = getattr(text, "head_dim", None)
        label = name or getattr(config, "name_or_path", "") or getattr(config, "model_type", "")
        return cls(
            name=str(label) or "custom",
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=heads if kv_heads is None else int(kv_heads),
            head_dim=hidden // heads if head_dim is None else int(head_dim),
            vocab_size=need("vocab_size"),
        )


@dataclass(frozen=True)
class ModelSpec:
    """A shipped model: its language-model dimensions and default HalfV schedule.

    Attributes:
        name: the short name used by :func:`get_model_spec` and ``halfv flops --model``.
        dims: language-model dimensions.
        schedule: default :class:`PruningConfig` (method doc section 7).
        backbone: the language backbone, in words.
        notes: where the schedule comes from.
    """

    name: str
    dims: ModelDims
    schedule: PruningConfig
    backbone: str
    notes: str


# One source of truth: the adapters' reference schedules (method doc section 7).
_LLAVA15 = LlavaAdapter.reference_schedule
_LLAVA_NEXT = LlavaNextAdapter.reference_schedule
_QWEN25 = Qwen25VLAdapter.reference_schedule
_INTERNVL = InternVLAdapter.reference_schedule

_SPECS = (
    ModelSpec(
        "llava-1.5-7b",
        ModelDims("llava-1.5-7b", 4096, 11008, 32, 32, 32, 128, 32064),
        _LLAVA15,
        "Vicuna-7B (LLaMA)",
        "HalfV README/CLI (LLaVA 0.35v): IVR 3 keep 0.5 share 0.2, freeze visual from 15.",
    ),
    ModelSpec(
        "llava-1.5-13b",
        ModelDims("llava-1.5-13b", 5120, 13824, 40, 40, 40, 128, 32064),
        _LLAVA15,
        "Vicuna-13B (LLaMA)",
        "The README applies the 7B values unchanged; layer 15 is 37.5% deep in 40 layers.",
    ),
    ModelSpec(
        "llava-next-7b",
        ModelDims("llava-next-7b", 4096, 14336, 32, 32, 8, 128, 32064),
        _LLAVA_NEXT,
        "Mistral-7B",
        "HalfV README: IVR 2 keep 0.5 share 0.1, freeze visual from 16.",
    ),
    ModelSpec(
        "qwen2.5-vl-7b",
        ModelDims("qwen2.5-vl-7b", 3584, 18944, 28, 28, 4, 128, 152064),
        _QWEN25,
        "Qwen2.5-7B",
        "HalfV Qwen CLI (0.5v) + README share 0.1: IVR 2 keep 0.25, keep 5% of N from 21.",
    ),
    ModelSpec(
        "internvl3-8b",
        ModelDims("internvl3-8b", 3584, 18944, 28, 28, 4, 128, 151674),
        _INTERNVL,
        "Qwen2.5-7B",
        "Not in the HalfV release: inherits the Qwen2.5-VL-7B schedule from the shared "
        "Qwen2.5-7B backbone; recalibrate with `halfv profile`.",
    ),
)

MODEL_SPECS: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Shipped models by short name (read-only)."""


def known_models() -> tuple[str, ...]:
    """Short names of the shipped models, in a stable order."""
    return tuple(MODEL_SPECS)


def get_model_spec(name: str) -> ModelSpec:
    """Return the shipped :class:`ModelSpec` called ``name`` (case-insensitive).

    Raises:
        ValueError: ``name`` is not shipped; the message lists the known names.
    """
    spec = MODEL_SPECS.get(name.strip().lower())
    if spec is None:
        msg = f"unknown model {name!r}; known: {', '.join(known_models())}"
        raise HalfvValueError(msg)
    return spec
