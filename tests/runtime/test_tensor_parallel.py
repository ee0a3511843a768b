"""halfv under transformers tensor parallelism: 2 CPU processes over gloo (issue #18).

The tiny Qwen2.5-VL (IVR, then SSR ``prune`` with RoPE scoring) and LLaVA (IVR, then SSR
``freeze``) are saved with ``save_pretrained`` and reloaded on two ranks with
``DistributedConfig(tp_size=2)``, which column-shards every ``q_proj``/``k_proj`` so each
rank projects 2 of the 4 query heads and 1 of the 2 key heads. Each rank must keep
exactly the unsharded model's tokens, give its prefill logits up to float32 reduction
order, and generate its greedy tokens: on a left-padded batch (one sample with two images)
scored from the projection taps, and on a one-image prompt (the single-span branch of the
relevance) scored by the fallback that projects the layer input itself. The workers also
check that a head split halfv cannot sum (a head count the ranks do not divide, ``q_proj``
sharded without ``k_proj``) is refused with an error naming it.

One ``torch.multiprocessing`` spawn serves both families (the workers' imports dominate).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

import halfv
from tiny import build_llava, build_qwen

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,  # two spawned processes: ~20 s of CPU, most of it imports
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="needs torch.distributed with the gloo backend",
    ),
]

WORLD = 2
SAMPLES = [[10, "img", 20], [5, "img", 3, "img", 4]]  # left-padded; two spans in sample 1
SINGLE = [[7, "img", 9]]  # one span: the relevance's single-segment branch
NEW_TOKENS = 5
CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {
        "ivr_layer": 2,
        "ivr_keep": 0.25,
        "ssr_layer": 4,
        "ssr_mode": "prune",
        "ssr_keep": 0.1,
    },
    "llava": {"ivr_layer": 2, "ivr_keep": 0.25, "ssr_layer": 4, "ssr_mode": "freeze"},
}
BUILDERS = {"qwen2_5_vl": build_qwen, "llava": build_llava}


def _run(model: nn.Module, inputs: dict[str, Any], family: str, *, taps: bool = True) -> Any:
    """Kept positions and logits of a pruned prefill, and greedy tokens of ``generate``."""
    with halfv.apply(model, halfv.PruningConfig(**CONFIGS[family])) as handle:
        if not taps:
            _disable_taps(model)
        with torch.no_grad():
            logits = model(**inputs).logits
        kept = handle.stats.kept_positions
        tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return {"kept": kept, "logits": logits, "tokens": tokens[:, -NEW_TOKENS:]}


def _disable_taps(model: nn.Module) -> None:
    """Make the projection taps record nothing, so scoring takes the fallback path."""
    from halfv.runtime.core import find_runtime

    runtime = find_runtime(model)
    assert runtime is not None
    runtime.tap = lambda *_args: None  # type: ignore[method-assign]


def _refusals(model: nn.Module, family: str) -> list[str]:
    """The errors halfv raises for head splits it cannot sum (checked on a TP model)."""
    from halfv.errors import UnsupportedModelError
    from halfv.runtime.distributed import head_group

    adapter = halfv.get_adapter(family)
    parts = adapter.attention_parts(adapter.decoder_layers(model)[1])
    found = head_group(parts, 1)
    assert found is not None, "q_proj/k_proj are DTensors sharded over 2 ranks"
    assert found[1] == WORLD
    messages = []
    lone = nn.Linear(parts.k_proj.in_features, parts.k_proj.out_features, bias=False)
    for bad in (
        dataclasses.replace(parts, num_heads=3),  # 3 query heads over 2 ranks
        dataclasses.replace(parts, k_proj=lone),  # q sharded, k replicated
    ):
        with pytest.raises(UnsupportedModelError) as info:
            head_group(bad, 1)
        messages.append(str(info.value))
    return messages


def _worker(rank: int, store: str, folders: dict[str, str], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        from torch.distributed.tensor import DTensor
        from transformers import AutoModelForImageTextToText
        from transformers.distributed import DistributedConfig

        results = {}
        for family, folder in folders.items():
            model = AutoModelForImageTextToText.from_pretrained(
                folder, distributed_config=DistributedConfig(tp_size=WORLD)
            ).eval()
            q_proj = (
                halfv.get_adapter(family)
                .attention_parts(halfv.get_adapter(family).decoder_layers(model)[0])
                .q_proj
            )
            assert isinstance(q_proj.weight, DTensor), "the model was not tensor-parallel"
            inputs = BUILDERS[family]().prompt(SAMPLES)
            result = _run(model, inputs, family)
            single = BUILDERS[family]().prompt(SINGLE, seed=1)
            result["fallback"] = _run(model, single, family, taps=False)
            result["refusals"] = _refusals(model, family)
            results[family] = result
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_tensor_parallel_ranks_match_the_unsharded_model(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    folders, expected = {}, {}
    for family, build in BUILDERS.items():
        tiny = build()
        folder = tmp_path / family
        tiny.model.save_pretrained(folder)
        folders[family] = str(folder)
        expected[family] = _run(tiny.model, tiny.prompt(SAMPLES), family)
        expected[family]["fallback"] = _run(tiny.model, tiny.prompt(SINGLE, seed=1), family)
    mp.spawn(
        _worker, args=(str(tmp_path / "store"), folders, str(tmp_path)), nprocs=WORLD, join=True
    )
    for rank in range(WORLD):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for family, want in expected.items():
            got = results[family]
            where = f"{family}, rank {rank}"
            assert got["kept"] == want["kept"], f"{where}: kept tokens differ (projection taps)"
            torch.testing.assert_close(got["logits"], want["logits"], rtol=1e-4, atol=1e-4)
            assert torch.equal(got["tokens"], want["tokens"]), f"{where}: generated tokens"
            fallback, alone = got["fallback"], want["fallback"]
            assert fallback["kept"] == alone["kept"], f"{where}: kept tokens differ (fallback)"
            torch.testing.assert_close(fallback["logits"], alone["logits"], rtol=1e-4, atol=1e-4)
            assert torch.equal(fallback["tokens"], alone["tokens"]), f"{where}: fallback tokens"
            evenly, alike = got["refusals"]
            assert "num_attention_heads=3" in evenly, evenly
            assert "Choose a tp_size that divides both" in evenly, evenly
            assert "shards q_proj and k_proj differently" in alike, alike
