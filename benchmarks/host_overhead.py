"""halfv's fixed per-call host cost, measured where compute is negligible (CPU, tiny model).

A LLaVA-family language model of tiny width (hidden 64) but real depth (32 layers, like
Vicuna-7B) runs a prefill of a 16-token image in a 77-token prompt on one CPU thread. At
this size the kernels cost next to nothing, so the time of a call is the host's: Python,
hooks and op dispatch. Per schedule it reports the median wall time, the time over ``unpruned``
(what halfv adds per call), and the aten ops one call dispatches (each one a kernel
launch on a GPU), with the schedules in turn over ``--rounds`` rounds.

Schedules: ``unpruned``; ``ivr`` (IVR at layer 3 keeping 50 %); ``freeze`` (LLaVA's
default: IVR at 3, visual rows frozen from 15); ``prune`` (IVR at 2 keeping 25 %, SSR
prune at 21 keeping 5 %: Qwen2.5-VL's). All run with the gate off (``min_gain=None``) and
the IVR policy ``attention`` (top-k of the same relevance scores): on a CPU halfv's
farthest-point selection is a Python loop of one pick per kept token, where a GPU runs one
kernel, so it would hide the runtime's own cost. ``skipped`` is LLaVA's schedule with the
cost gate on and constants that make it skip every stage: what a call the gate runs
unpruned still pays (finding the spans, the decision, the hooks).

    PYTHONPATH=src python benchmarks/host_overhead.py --out benchmarks/results/host-overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import halfv
from halfv.ops.cost import CostConstants, CostModel
from halfv.ops.host_ops import OpCounter

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling bench_cpu
import bench_cpu as bc

SCHEDULES: dict[str, dict[str, Any] | None] = {
    "unpruned": None,
    "ivr": {"ivr_layer": 3, "ivr_keep": 0.5, "ivr_policy": "attention"},
    "freeze": {"ivr_layer": 3, "ivr_keep": 0.5, "ssr_layer": 15, "ssr_mode": "freeze",
               "ivr_policy": "attention"},
    "prune": {"ivr_layer": 2, "ivr_keep": 0.25, "ssr_layer": 21, "ssr_mode": "prune",
              "ssr_keep": 0.05, "ivr_policy": "attention"},
    "skipped": {"ivr_layer": 3, "ivr_keep": 0.5, "ssr_layer": 15, "ssr_mode": "freeze"},
}  # fmt: skip
#: constants under which the gate skips every stage (the ``skipped`` schedule)
NEVER = CostConstants(
    device_kind="cpu", dtype="float32", overlap=1.0, sec_per_flop=0.0, layer_device_s=0.0,
    layer_host_s=1e-4, call_host_s=1.0, prune_host_s=0.0, pruned_layer_host_s=0.0,
    freeze_host_s=0.0, frozen_layer_host_s=0.0, stage_device_s=0.0, source="host_overhead.py",
)  # fmt: skip


@torch.inference_mode()
def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    text = bc.dims(64, 128, args.layers, 4, 4, 1000)
    model = bc.build_model(bc.model_config("llava", text), "cpu", torch.float32)
    ids = [5] * 30 + [model.config.image_token_id] * args.tokens + [6] * 31
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
    inputs["attention_mask"] = inputs["attention_mask"].long()

    def ctx(name: str) -> Any:
        cfg = SCHEDULES[name]
        if cfg is None:
            return nullcontext()
        if name == "skipped":  # the gate on, every stage predicted to slow the call down
            return halfv.apply(model, {**cfg, "min_gain": 0.05}, cost_model=CostModel([NEVER]))
        return halfv.apply(model, {**cfg, "min_gain": None})

    samples: dict[str, list[float]] = {name: [] for name in SCHEDULES}
    ops: dict[str, int] = {}
    for name in SCHEDULES:
        with ctx(name):
            for _ in range(args.warmup):
                model(**inputs, logits_to_keep=1)
            with OpCounter() as counter:
                model(**inputs, logits_to_keep=1)
            ops[name] = counter.dispatched
    for r in range(args.rounds):
        for name in SCHEDULES if r % 2 == 0 else list(SCHEDULES)[::-1]:
            with ctx(name):
                for _ in range(args.calls):
                    tick = time.perf_counter()
                    model(**inputs, logits_to_keep=1)
                    samples[name].append((time.perf_counter() - tick) * 1e3)
    med = {name: statistics.median(s) for name, s in samples.items()}
    rows = {
        name: {"median_ms": med[name], "over_unpruned_ms": med[name] - med["unpruned"],
               "aten_ops": ops[name], "ops_over_unpruned": ops[name] - ops["unpruned"]}
        for name in SCHEDULES
    }  # fmt: skip
    meta = {"layers": args.layers, "tokens": args.tokens, "rounds": args.rounds,
            "calls": args.calls, "torch": torch.__version__, "commit": args.label,
            "date": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    return {"meta": meta, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", type=int, default=32, help="decoder layers (>= 22: SSR at 21)")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--label", default="", help="what code was measured (kept in the JSON)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result = run(args)
    for name, row in result["rows"].items():
        bc.emit(f"{name:<9} {row['median_ms']:7.2f} ms  (+{row['over_unpruned_ms']:5.2f} ms)  "
                f"{row['aten_ops']:5d} aten ops (+{row['ops_over_unpruned']})")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
