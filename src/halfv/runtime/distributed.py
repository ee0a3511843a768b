"""Tensor parallelism: relevance over every rank's attention heads.

Under transformers tensor parallelism (``from_pretrained(..., distributed_config=
DistributedConfig(tp_size=N))`` or ``tp_plan="auto"``), a decoder layer's ``q_proj`` and
``k_proj`` are column-sharded: their weights are DTensors split on the output features,
and each rank's projection returns only its own ``H / N`` query heads and ``KV / N`` key
heads (whole heads, in order, so the grouped-query mapping of the local heads is the
global one). The hidden states, the final norm and everything halfv selects from are
replicated.

HalfV's relevance is a softmax per head over each span's keys, then the mean over the
``H`` heads (:func:`halfv.ops.relevance.relevance_from_projections`). Each rank computes the
softmaxes of its own heads exactly, so the relevance of the unsharded model is the sum of
every rank's per-head probabilities divided by ``H``: one all-reduce of ``M`` floats per
scoring layer per prefill. Every rank then holds the same scores and keeps the same
tokens as the unsharded model.

:func:`head_group` finds the process group from the weights themselves (no reliance on
private model attributes), so a model sharded with ``torch.distributed.tensor.parallel``
directly is handled the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from halfv.errors import UnsupportedModelError
from halfv.interfaces import AttentionParts

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["HeadGroup", "check_tensor_parallel", "head_group"]

#: the process group that splits a layer's heads, and its size
HeadGroup = tuple["ProcessGroup", int]


def _output_shard_dims(weight: object) -> list[int]:
    """Mesh dimensions that shard a linear weight's output features (none if not a DTensor)."""
    if not torch.distributed.is_available():
        return []
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(weight, DTensor):
        return []
    names = weight.device_mesh.mesh_dim_names
    dims = []
    for i, placement in enumerate(weight.placements):
        # A named mesh marks its tensor-parallel dimension "tp"; the others (FSDP) gather
        # the weight before the forward, so the projection's output is not split there.
        on_tp = names is None or names[i] == "tp"
        if on_tp and isinstance(placement, Shard) and placement.dim % weight.ndim == 0:
            dims.append(i)  # the output features (nn.Linear weight: [out, in])
    return dims


def _group_of(module: nn.Linear, name: str, layer: int) -> HeadGroup | None:
    """``(process group, size)`` over which ``module``'s output features are sharded."""
    weight = module.weight
    dims = _output_shard_dims(weight)
    if not dims:
        return None
    mesh = weight.device_mesh  # type: ignore[attr-defined]  # a DTensor (checked above)
    if len(dims) > 1:
        msg = (
            f"halfv: the {name} weight of decoder layer {layer} is sharded on its output "
            f"features along {len(dims)} mesh dimensions ({mesh}); halfv supports tensor "
            "parallelism along one mesh dimension. Load the model with tensor parallelism "
            "only (DistributedConfig(tp_size=N), no FSDP of the attention projections)"
        )
        raise UnsupportedModelError(msg)
    size = int(mesh.size(dims[0]))
    if size == 1:
        return None
    return mesh.get_group(dims[0]), size


def head_group(parts: AttentionParts, layer: int) -> HeadGroup | None:
    """The process group (and its size) that splits this layer's attention heads.

    ``None`` when ``q_proj`` and ``k_proj`` are not sharded. Raises
    :class:`~halfv.errors.UnsupportedModelError` when only one of them is, when they are
    sharded over different ranks, or when the heads do not split evenly (a rank would
    hold part of a head, or query heads without their key head).
    """
    q = _group_of(parts.q_proj, "q_proj", layer)
    k = _group_of(parts.k_proj, "k_proj", layer)
    if q is None and k is None:
        return None
    if q is None or k is None or q[1] != k[1] or _ranks(q[0]) != _ranks(k[0]):
        msg = (
            f"halfv: decoder layer {layer} shards q_proj and k_proj differently "
            f"(q_proj over {_describe(q)}, k_proj over {_describe(k)}); halfv needs both "
            "column-sharded over the same tensor-parallel ranks (the transformers 'colwise' "
            "plan for both) or neither"
        )
        raise UnsupportedModelError(msg)
    size = q[1]
    if parts.num_heads % size or parts.num_kv_heads % size:
        msg = (
            f"halfv: tensor parallelism over {size} ranks does not split decoder layer "
            f"{layer}'s heads evenly (num_attention_heads={parts.num_heads}, "
            f"num_key_value_heads={parts.num_kv_heads}); each rank must hold whole query "
            "heads with their key heads. Choose a tp_size that divides both head counts"
        )
        raise UnsupportedModelError(msg)
    return q


def check_tensor_parallel(parts: Iterable[tuple[int, AttentionParts]]) -> None:
    """Validate the sharding of every scoring layer before any forward (see
    :func:`head_group`); raises :class:`~halfv.errors.UnsupportedModelError`."""
    for layer, layer_parts in parts:
        head_group(layer_parts, layer)


def _ranks(group: ProcessGroup) -> list[int]:
    return list(torch.distributed.get_process_group_ranks(group))


def _describe(found: HeadGroup | None) -> str:
    if found is None:
        return "no ranks (replicated)"
    return f"ranks {_ranks(found[0])}"
