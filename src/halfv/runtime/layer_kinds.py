"""Which layers of a model with linear-attention layers may score and prune (no tensors).

A linear-attention (recurrent) layer (``LayerSpec.kind == "linear"``: Qwen3.5's Gated
DeltaNet) has no softmax over keys, so there is no last-token attention to rank visual
tokens by, and no per-position KV cache: after a prune it simply runs its recurrence over
the rows that are left. transformers reads a hybrid cache's length (the position of each
generated token, the size of each decode mask) from the *first attention layer*
(``Cache.get_seq_length`` and ``masking_utils.find_first_full_attention_index``), and
halfv remaps every pruned layer's decode mask from that layer's. So:

* every scoring layer (the layer before a pruning layer whose policy reads scores) must
  be an attention layer;
* the first prune must come after the first attention layer, which then caches the whole
  prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from halfv.config import PruningConfig
from halfv.errors import ConfigError, UnsupportedModelError
from halfv.interfaces import LayerSpec

__all__ = ["check_layer_kinds", "valid_scored_layers"]


def valid_scored_layers(specs: Sequence[LayerSpec]) -> list[int]:
    """Pruning layers ``l`` whose scoring layer ``l - 1`` is an attention layer."""
    return [i + 1 for i, spec in enumerate(specs[:-1]) if spec.kind != "linear"]


def _nearest(value: int, candidates: Sequence[int]) -> str:
    below = [c for c in candidates if c < value]
    above = [c for c in candidates if c > value]
    picks = ([below[-1]] if below else []) + ([above[0]] if above else [])
    return " or ".join(str(p) for p in picks) or "none"


def check_layer_kinds(
    config: PruningConfig, specs: Sequence[LayerSpec], scoring_layers: Mapping[int, bool]
) -> None:
    """Refuse a schedule that scores at, or prunes before, a linear-attention layer.

    Args:
        config: the schedule.
        specs: one :class:`LayerSpec` per decoder layer.
        scoring_layers: the layers whose relevance a prune reads (``{layer: rope}``).

    Raises:
        ConfigError: a scoring layer is a linear layer, or the IVR layer comes before the
            first attention layer; the message names the nearest valid layers.
        UnsupportedModelError: the model has no attention layer at all.
    """
    attention = [i for i, spec in enumerate(specs) if spec.kind != "linear"]
    if len(attention) == len(specs):
        return
    if not attention:
        msg = "halfv: every decoder layer is a linear-attention layer; nothing can score tokens"
        raise UnsupportedModelError(msg)
    first = attention[0]
    valid = valid_scored_layers(specs)
    if config.ivr_layer <= first:
        msg = (
            f"ivr_layer={config.ivr_layer} prunes before layer {first}, the model's first "
            "attention layer (layers before it are linear-attention layers); transformers "
            "reads the cache length of generated tokens from that layer, so it must see "
            f"the whole prompt: use ivr_layer >= {first + 1}"
        )
        raise ConfigError(msg)
    fields = {config.ivr_layer - 1: "ivr_layer"}
    if config.ssr_layer is not None:
        fields[config.ssr_layer - 1] = "ssr_layer"
    for layer in sorted(scoring_layers):
        if specs[layer].kind != "linear":
            continue
        name = fields.get(layer, "ssr_layer")
        value = layer + 1
        options = valid if name == "ivr_layer" else [v for v in valid if v > config.ivr_layer]
        msg = (
            f"{name}={value} scores visual tokens at layer {layer}, a linear-attention layer "
            "(no softmax attention to rank tokens by); the nearest valid "
            f"{name} values are {_nearest(value, options)} (their scoring layers are "
            "attention layers), or pick a policy that needs no scores"
        )
        raise ConfigError(msg)
