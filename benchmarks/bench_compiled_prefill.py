"""Prefill with the decoder layers compiled (regional ``torch.compile``), with and without halfv.

Eager transformers spends most of a single-image prefill on the host: at 576 visual
tokens on an H200 the GPU idles while Python launches ~40 kernels per layer, so a
pruned prefill, whose GPU work is about half, is not faster (docs/speed.md). Compiling
each decoder layer's ``forward`` (the regional recipe: hooks stay eager, so halfv's
pruning steps run between compiled layers) fuses the elementwise work and cuts the host
cost per layer. This script times, in turn, for each recipe (``eager``, ``compiled``) the
unpruned model and halfv's default schedule, on the language-side prefill of one
real-size model with random weights, and reports medians and ratios.

    PYTHONPATH=src python benchmarks/bench_compiled_prefill.py --model llava-1.5-7b \
        --tokens 576 --out compiled.json
    PYTHONPATH=src python benchmarks/bench_compiled_prefill.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cpu as bc

import halfv


def compile_layers(model: Any) -> list[tuple[Any, Any]]:
    """Compile every decoder layer's ``forward`` (dynamic shapes); returns what to undo."""
    import torch._dynamo.config as dynamo_config

    layers = halfv.get_adapter_for(model).decoder_layers(model)
    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 4 * len(layers))
    compiled = torch.compile(type(layers[0]).forward, dynamic=True)
    undo = []
    for layer in layers:
        undo.append((layer, layer.__dict__.get("forward")))
        layer.forward = functools.partial(compiled, layer)
    return undo


def uncompile(undo: list[tuple[Any, Any]]) -> None:
    for layer, previous in undo:
        if previous is None:
            layer.__dict__.pop("forward", None)
        else:
            layer.forward = previous


@torch.inference_mode()
def run(args: argparse.Namespace) -> dict[str, Any]:
    cuda = args.device == "cuda"
    dtype = getattr(torch, args.dtype)
    text = bc.TEXT_DIMS["tiny"] if args.cpu_smoke else None
    model = bc.build_model(bc.model_config(bc.KIND[args.model], text), args.device, dtype)
    prompt = bc.make_prompt(model, args.tokens, args.text_tokens)
    lm = prompt["lm"]

    def prefill() -> Any:
        return model(**lm, logits_to_keep=1)

    methods = ("unpruned", "halfv")
    samples: dict[str, list[float]] = {}
    compile_s: dict[str, float] = {}
    for recipe in args.recipes:
        undo = compile_layers(model) if recipe == "compiled" else []
        try:
            for method in methods:  # warm: kernels, and the compiles of every stage shape
                tick = time.perf_counter()
                with bc.attach(model, method):
                    bc.time_ms(prefill, args.warmup, 0, cuda)
                compile_s[f"{recipe}/{method}"] = time.perf_counter() - tick
            for r in range(args.rounds):
                row = []
                for method in methods:
                    with bc.attach(model, method):
                        t = statistics.median(bc.time_ms(prefill, 0, args.calls, cuda))
                    samples.setdefault(f"{recipe}/{method}", []).append(t)
                    row.append(f"{method} {t:.2f}")
                bc.emit(f"{recipe} round {r}: " + ", ".join(row))
        finally:
            uncompile(undo)
    base = statistics.median(samples["eager/unpruned"]) if "eager/unpruned" in samples else None
    summary = {}
    for key, values in samples.items():
        recipe = key.split("/")[0]
        same = statistics.median(samples[f"{recipe}/unpruned"])
        med = statistics.median(values)
        summary[key] = {
            "median_ms": med,
            "speedup_vs_same_recipe_unpruned": same / med,
            "speedup_vs_eager_unpruned": base / med if base else None,
        }
    return {
        "meta": {
            "model": args.model, "tokens": prompt["visual"],
            "prompt": int(lm["input_ids"].shape[1]),
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "dtype": args.dtype, "rounds": args.rounds,
            "calls": args.calls, "command": " ".join(sys.argv),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "summary": summary, "warmup_s": compile_s, "samples": samples,
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=tuple(bc.KIND), default="llava-1.5-7b")
    p.add_argument("--tokens", type=int, default=576)
    p.add_argument("--text-tokens", type=int, default=60)
    p.add_argument(
        "--recipes", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"]
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU, 2 rounds")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.device, args.dtype, args.rounds, args.calls, args.warmup = "cpu", "float32", 2, 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    for key, row in result["summary"].items():
        bc.emit(f"{key}: {row['median_ms']:.2f} ms, x{row['speedup_vs_same_recipe_unpruned']:.2f} "
                "vs the same recipe unpruned")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
