"""CPU microbenchmark of greedy decode: ms per new token, ops and host syncs per step.

Decode of a small model is launch-bound: per step every decoder layer runs a handful of
small ops, so Python work in halfv's per-layer hooks and any host synchronisation
(``.item()``, ``.tolist()``, ``bool(tensor)``: ``aten::_local_scalar_dense``) show up
directly. This script builds the small random families of ``bench_cpu`` (language side
only, no pixels), runs greedy ``generate`` unpruned and with ``halfv.apply(model)`` in
turn, and reports

* **ms/token**: ``(generate(new) - generate(1)) / (new - 1)``, median over rounds;
* **ratio**: median over rounds of halfv / unpruned ms/token within one round (the two
  take turns, so a change in machine load hits both alike);
* **ops/step** and **syncs/step**: aten ops, and host reads of tensor values (``item``,
  ``bool``, ``nonzero``, ``tolist``, ...) of one decode step (``generate(5)`` minus
  ``generate(4)``, counted by a dispatch mode);
* **hooks us/step**: wall time spent inside halfv's hooks per decode step (the hooks are
  wrapped with a timer for one extra ``generate``).

``--batch 2`` decodes a ragged, left-padded batch (the second prompt has half the visual
tokens), which exercises halfv's dummy slots and remapped decode masks. ``--device cuda
--dtype bfloat16 --dims real --layers 0 --tokens 4096`` runs the same at real size on a GPU
(there a sync also stalls the launch queue, and the timings include it).

    python benchmarks/bench_decode.py [--families qwen2_5_vl] [--layers 12] [--batch 2]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

import halfv
from halfv.ops.host_ops import OpCounter

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling bench_cpu
import bench_cpu as bc


def ragged_prompt(model: Any, tokens: int, text: int, batch: int) -> dict[str, torch.Tensor]:
    """Language-side inputs of ``batch`` prompts (sample i: ``tokens / 2**i`` visual),
    left-padded with token 0."""
    rows = [
        bc.make_prompt(model, max(4, tokens >> i), text, seed=i)["lm"]["input_ids"][0]
        for i in range(batch)
    ]
    width = max(len(r) for r in rows)
    ids = torch.zeros(batch, width, dtype=torch.long, device=rows[0].device)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def clock(device: str) -> float:
    """``perf_counter`` after the device has finished its queued work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def generate(model: Any, prompt: dict[str, torch.Tensor], new: int) -> Any:
    """Greedy ``generate`` of exactly ``new`` tokens."""
    return model.generate(**prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)


def step_ops(model: Any, prompt: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Aten ops and host syncs of one decode step: ``generate(5)`` minus ``generate(4)``."""
    counts = []
    for new in (4, 5):
        with OpCounter() as counter:
            generate(model, prompt, new)
        counts.append((counter.dispatched, counter.host.total()))
    return counts[1][0] - counts[0][0], counts[1][1] - counts[0][1]


@contextmanager
def timed_hooks(model: nn.Module) -> Iterator[list[float]]:
    """Wrap every halfv hook of ``model`` with a timer; yields the list of seconds spent."""
    spent: list[float] = [0.0]
    saved: list[tuple[dict[int, Any], int, Any]] = []

    def timed(hook: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tick = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - tick

        return wrapper

    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key, hook in list(hooks.items()):
                if "PruningRuntime" in getattr(hook, "__qualname__", ""):
                    saved.append((hooks, key, hook))
                    hooks[key] = timed(hook)
    try:
        yield spent
    finally:
        for hooks, key, hook in saved:
            hooks[key] = hook


def hook_us_per_step(model: nn.Module, prompt: dict[str, torch.Tensor], new: int) -> float:
    """Microseconds per decode step spent in halfv's hooks."""
    totals = []
    for tokens in (1, new):
        with timed_hooks(model) as spent:
            generate(model, prompt, tokens)
        totals.append(spent[0])
    return (totals[1] - totals[0]) / (new - 1) * 1e6


def family(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Decode ms/token, ops and syncs per step of one family, unpruned and with halfv."""
    text = None if args.dims == "real" else dict(bc.TEXT_DIMS[args.dims])
    if args.layers and text is not None:
        text["num_hidden_layers"] = args.layers
    dtype = getattr(torch, args.dtype)
    model = bc.build_model(bc.model_config(kind, text), args.device, dtype)
    prompt = ragged_prompt(model, args.tokens, args.text_tokens, args.batch)
    methods = ("unpruned", "halfv")
    samples: dict[str, list[float]] = {m: [] for m in methods}
    result: dict[str, Any] = {"family": kind, "prompt": list(prompt["input_ids"].shape)}
    result["layers"] = len(halfv.get_adapter_for(model).decoder_layers(model))
    with torch.inference_mode():
        for method in methods:
            with bc.attach(model, method):
                generate(model, prompt, 3)  # warm-up
                ops, syncs = step_ops(model, prompt)
            result[method] = {"ops_per_step": ops, "syncs_per_step": syncs}
        with bc.attach(model, "halfv"):
            result["halfv"]["hooks_us_per_step"] = hook_us_per_step(model, prompt, args.new)
        for round_ in range(args.warmup + args.repeats):
            for method in methods:
                with bc.attach(model, method):
                    tick = clock(args.device)
                    generate(model, prompt, 1)
                    one = clock(args.device)
                    generate(model, prompt, args.new)
                    per = (clock(args.device) - one - (one - tick)) / (args.new - 1) * 1e3
                if round_ >= args.warmup:
                    samples[method].append(per)
        if args.profile:
            with bc.attach(model, "halfv"):
                profiler = cProfile.Profile()
                profiler.runcall(generate, model, prompt, args.new)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    for m in methods:
        result[m] |= {"ms_per_token": statistics.median(samples[m]), "samples": samples[m]}
    ratios = [p / u for p, u in zip(samples["halfv"], samples["unpruned"], strict=True)]
    result["ratio"] = statistics.median(ratios)
    cells = [
        f"{m} {result[m]['ms_per_token']:6.2f} ms/tok {result[m]['ops_per_step']:5d} ops "
        f"{result[m]['syncs_per_step']} syncs"
        for m in methods
    ]
    hooks, depth = result["halfv"]["hooks_us_per_step"], result["layers"]
    bc.emit(
        f"{kind:<11} B={args.batch} L={depth}  " + " | ".join(cells)
        + f" | ratio {result['ratio']:.3f} | hooks {hooks:6.1f} us/step"
    )  # fmt: skip
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the decode benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = list(bc.KIND.values())
    parser.add_argument("--families", nargs="+", default=kinds, choices=kinds)
    parser.add_argument("--dims", default="tiny", choices=[*bc.TEXT_DIMS, "real"])
    parser.add_argument("--layers", type=int, default=12, help="decoder layers; 0: the dims'")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--tokens", type=int, default=256, help="visual tokens of sample 0")
    parser.add_argument("--text-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1, help="ragged batch size (1)")
    parser.add_argument("--new", type=int, default=32, help="new tokens per generate (32)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--profile", type=int, default=0, help="print the N top cProfile rows")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the decode benchmark; returns the exit code."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [family(kind, args) for kind in args.families]
    if args.out is not None:
        meta = {k: v for k, v in vars(args).items() if k != "out"}
        data = {"meta": {**meta, "torch": torch.__version__}, "families": results}
        args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
