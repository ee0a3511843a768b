"""halfv's decode step does no per-layer host work, and its prefill reads the device once.

Decode is launch-bound, so what halfv adds to a decode step must not grow with the depth
of the model: no host synchronisation at all (``.item()``, ``bool(tensor)``, ``.tolist()``,
``nonzero``, tensors built from Python data), and a fixed number of tensor ops per pruning
stage (each stage's mask is remapped once per step, not once per layer). The counts come
from a dispatch mode over whole greedy ``generate`` calls: one decode step is
``generate(n + 1) - generate(n)``, and halfv's share is that minus the unpruned model's.

A pruned prefill may read device values on the host only where it finds the visual spans
(their boundaries become Python ints): the budgets fix every later count, so selection,
surgery and frozen layers run without waiting for the device. A sync in the middle of a
prefill drains the GPU's queue; the first H100 profile counted 29 of them per Qwen2.5-VL
prefill (``benchmarks/profile_prefill.py``).
"""

from __future__ import annotations

import json
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Self

import pytest
import torch

import halfv
from benchmark_scripts import load_script
from halfv.ops.host_ops import HOST_OPS, OpCounter
from halfv.policies import UniformPolicy
from tiny import BUILDERS, StrideSSR, Tiny

SCHEDULES = {
    "prune": halfv.PruningConfig(
        ivr_layer=1, ivr_keep=0.5, ssr_layer=2, ssr_mode="prune", ssr_keep=0.25
    ),
    "freeze": halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=2, ssr_mode="freeze"),
}
RAGGED = [[4, "img", 6], [9, "img", 2]]  # left padding and dummy slots after the prune
SINGLE = [[5, "img", 7]]


def _step(model: torch.nn.Module, inputs: dict[str, Any], grad_mode: Any) -> tuple[int, Counter]:
    """Ops and host reads of one greedy decode step (``generate(3) - generate(2)``)."""
    counts = []
    for new in (2, 3):
        with grad_mode(), OpCounter() as work:
            model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        counts.append((work.dispatched, work.host))
    return counts[1][0] - counts[0][0], counts[1][1] - counts[0][1]


def _halfv_share(tiny: Tiny, mode: str, samples: list[Any], grad_mode: Any) -> tuple[int, dict]:
    """What halfv adds to one decode step: (extra ops, extra host reads by op)."""
    model, inputs = tiny.model, tiny.prompt(samples)
    ops_ref, host_ref = _step(model, inputs, grad_mode)
    adapter = halfv.get_adapter_for(model)
    ssr = StrideSSR() if mode == "prune" else halfv.get_ssr_policy("freeze")
    pipeline = halfv.Pipeline(
        SCHEDULES[mode], adapter, UniformPolicy(), ssr, halfv.get_estimator("tme")
    )
    with pipeline.attach(model) as handle:
        ops, host = _step(model, inputs, grad_mode)
        assert handle.decode_steps > 0  # the pruned decode path really ran
    extra_host = {k: host[k] - host_ref[k] for k in host.keys() | host_ref.keys()}
    return ops - ops_ref, {k: v for k, v in extra_host.items() if v}


@pytest.mark.parametrize(
    ("family", "attention", "mode", "samples", "grad_mode"),
    [
        ("qwen2_5_vl", "sdpa", "prune", RAGGED, torch.no_grad),
        ("qwen2_5_vl", "sdpa", "prune", SINGLE, torch.inference_mode),
        ("llava", "eager", "freeze", RAGGED, torch.inference_mode),
        ("internvl", "sdpa", "freeze", SINGLE, torch.no_grad),
    ],
    ids=["qwen-sdpa-prune-ragged", "qwen-sdpa-prune-b1", "llava-eager-freeze-ragged", "internvl"],
)
def test_decode_step_host_work_does_not_grow_with_depth(
    family: str, attention: str, mode: str, samples: list[Any], grad_mode: Any
) -> None:
    shares = {}
    for layers in (4, 8):  # same two stages; 2 vs 6 layers after the last prune
        tiny = BUILDERS[family](layers=layers)
        tiny.model.set_attn_implementation(attention)
        shares[layers] = _halfv_share(tiny, mode, samples, grad_mode)
    for layers, (_, host) in shares.items():
        assert host == {}, f"halfv reads tensor values on the host during decode ({layers} layers)"
    assert shares[8][0] == shares[4][0], f"halfv's ops per decode step grow with depth: {shares}"
    assert shares[4][0] <= 8 * 2, f"more than 8 ops per stage per decode step: {shares}"


class _HostReadsBySource(OpCounter):
    """Host reads (``tolist`` included), that halfv's own code issues, by file."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: Counter[str] = Counter()

    def _attribute(self) -> None:
        """Count a read whose innermost library frame is halfv's (not transformers')."""
        frames = [
            f.filename
            for f in traceback.extract_stack()
            if "/halfv/" in f.filename or "/transformers/" in f.filename
        ]
        if frames and "/halfv/" in frames[-1]:
            self.sources[Path(frames[-1]).name] += 1

    def __enter__(self) -> Self:
        super().__enter__()
        counted = torch.Tensor.tolist

        def attributed(tensor: torch.Tensor) -> Any:
            self._attribute()
            return counted(tensor)

        torch.Tensor.tolist = attributed  # type: ignore[method-assign]  # OpCounter restores
        return self

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if func.__name__.split(".")[0] in HOST_OPS:
            self._attribute()
        return super().__torch_dispatch__(func, types, args, kwargs)


@pytest.mark.parametrize(
    ("family", "mode", "samples"),
    [
        ("qwen2_5_vl", "prune", RAGGED),
        ("qwen2_5_vl", "prune", SINGLE),
        ("llava", "freeze", RAGGED),
        ("internvl", "freeze", SINGLE),
    ],
    ids=["qwen-prune-ragged", "qwen-prune-b1", "llava-freeze-ragged", "internvl-freeze"],
)
def test_prefill_reads_the_device_only_to_find_spans(
    family: str, mode: str, samples: list[Any]
) -> None:
    tiny = BUILDERS[family](layers=6)
    model, inputs = tiny.model, tiny.prompt(samples)
    base = SCHEDULES[mode].model_copy(update={"ivr_policy": "halfv"})
    # mode "prune": the real SSR stage (RoPE relevance and top-k, the built-in "prune")
    with halfv.apply(model, base) as handle, torch.inference_mode():
        with _HostReadsBySource() as reads:
            model(**inputs)
        assert handle.stats is not None  # it pruned; counting the stats reads, after
    assert set(reads.sources) == {"spans.py"}, dict(reads.sources)
    assert reads.sources["spans.py"] <= 5, dict(reads.sources)  # the span search, once


def test_no_hooks_before_the_scoring_layer() -> None:
    tiny = BUILDERS["llava"](layers=6)
    config = halfv.PruningConfig(ivr_layer=3, ivr_keep=0.5, ssr_mode="none")
    layers = halfv.get_adapter_for(tiny.model).decoder_layers(tiny.model)
    with halfv.apply(tiny.model, config):
        hooked = [i for i, layer in enumerate(layers) if "forward" in vars(layer)]
        assert not any(layer._forward_pre_hooks for layer in layers)  # a forward, no hooks
    assert hooked == [2, 3, 4, 5]
    assert not any("forward" in vars(layer) for layer in layers)


def test_decode_benchmark_runs(tmp_path: Path) -> None:
    """``benchmarks/bench_decode.py`` end to end on a 2-layer model (so it cannot rot)."""
    bench = load_script("bench_decode.py")
    threads = torch.get_num_threads()
    out = tmp_path / "decode.json"
    argv = ["--families", "llava", "--layers", "2", "--tokens", "16", "--batch", "2", "--new", "3"]
    argv += ["--warmup", "0", "--repeats", "1", "--out", str(out)]
    try:
        assert bench.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark runs on one thread
    (row,) = json.loads(out.read_text())["families"]
    assert row["layers"] == 2
    assert row["halfv"]["syncs_per_step"] == row["unpruned"]["syncs_per_step"]
    assert row["halfv"]["ms_per_token"] > 0
