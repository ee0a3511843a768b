"""Where halfv's prefill time goes beyond the ideal schedule: interleaved timing + a profile.

``bench_speed.py`` times each method in a block of calls, so a drift in the host's speed
(large on shared VMs) lands on one method only. This script builds one real-size model
(random weights, like ``bench_speed``), then runs ``--rounds`` rounds in which every method
is timed ``--calls`` times in turn, and reports per method the median over rounds and the
median over rounds of the ratio to ``unpruned``. It then records one prefill of each
profiled method with ``torch.profiler`` and reports, per method:

* GPU busy time (sum of kernel durations) against the wall time of the call: a gap means
  the GPU waited for the host;
* host synchronisations (``cudaStreamSynchronize``, ``cudaDeviceSynchronize``, blocking
  device-to-host copies) and the aten ops that caused them (``nonzero``, ``item``, ...);
* the top operators by self CUDA time and by self CPU time;

and, for ``halfv`` against ``ideal``, the operators whose CUDA or CPU time differs most.
With ``--decode N`` it also profiles ``N`` greedy decode steps per method (the difference
of two ``generate`` calls) and reports per step: wall time, GPU busy time, host time,
kernels, syncs, and the operators with the most host time.

    PYTHONPATH=src python benchmarks/profile_prefill.py --model qwen2.5-vl-7b --tokens 4096 \
        --out prefill-profile.json
    python benchmarks/profile_prefill.py --cpu-smoke --out /tmp/p.json    # tiny, CPU
    python benchmarks/profile_prefill.py --report benchmarks/results/profile-qwen-4096-h100-v6.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling bench_cpu
import bench_cpu as bc

METHODS = ("unpruned", "halfv", "ideal")
#: host-side calls that wait for the GPU
SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
#: aten ops that read a device value on the host
SYNC_OPS = ("aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")


def profile_call(fn: Any, cuda: bool) -> dict[str, Any]:
    """One call under ``torch.profiler``: busy GPU time, syncs, top operators."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    by_name = {e.key: e for e in events}

    def device_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", 0.0) or 0.0)

    kernels = [
        e
        for e in prof.events()
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
    ]
    busy_us = sum(e.time_range.elapsed_us() for e in kernels)
    ops = {
        e.key: {
            "count": e.count,
            "self_cpu_us": e.self_cpu_time_total,
            "self_device_us": device_us(e),
        }
        for e in events
    }
    top_device = sorted(ops.items(), key=lambda kv: -kv[1]["self_device_us"])[:25]
    top_cpu = sorted(ops.items(), key=lambda kv: -kv[1]["self_cpu_us"])[:25]
    return {
        "kernels": len(kernels),
        "busy_device_ms": busy_us / 1e3,
        "host_ms": sum(e.self_cpu_time_total for e in events) / 1e3,
        "syncs": {k: by_name[k].count for k in SYNC_EVENTS if k in by_name},
        "sync_ops": {k: by_name[k].count for k in SYNC_OPS if k in by_name},
        "top_device": dict(top_device),
        "top_cpu": dict(top_cpu),
        "ops": ops,
    }


def differences(a: dict[str, Any], b: dict[str, Any], key: str, top: int = 20) -> list[Any]:
    """Operators whose ``key`` total differs most between profiles ``a`` and ``b`` (a - b)."""
    names = set(a["ops"]) | set(b["ops"])
    zero = {"count": 0, key: 0.0}
    rows = [
        (n, a["ops"].get(n, zero)[key] - b["ops"].get(n, zero)[key],
         a["ops"].get(n, zero)["count"] - b["ops"].get(n, zero)["count"])
        for n in names
    ]  # fmt: skip
    rows.sort(key=lambda r: -abs(r[1]))
    return [{"op": n, "delta_ms": d / 1e3, "delta_count": c} for n, d, c in rows[:top]]


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

    samples: dict[str, list[float]] = {m: [] for m in args.methods}
    ratios: dict[str, list[float]] = {m: [] for m in args.methods}
    for method in args.methods:  # warm every path once (kernels, Triton compile)
        with bc.attach(model, method):
            bc.time_ms(prefill, args.warmup, 0, cuda)
    for r in range(args.rounds):
        per_round = {}
        for method in args.methods:
            with bc.attach(model, method):
                per_round[method] = statistics.median(bc.time_ms(prefill, 1, args.calls, cuda))
            samples[method].append(per_round[method])
        for method in args.methods:
            if "unpruned" in per_round:
                ratios[method].append(per_round[method] / per_round["unpruned"])
        bc.emit(f"round {r}: " + ", ".join(f"{m} {t:.2f}" for m, t in per_round.items()))
    summary = {
        m: {"median_ms": statistics.median(samples[m]), "min_ms": min(samples[m]),
            "ratio_to_unpruned": statistics.median(ratios[m]) if ratios[m] else None}
        for m in args.methods
    }  # fmt: skip
    profiles = {}
    for method in args.profile:
        with bc.attach(model, method):
            bc.time_ms(prefill, 2, 0, cuda)
            profiles[method] = profile_call(prefill, cuda)
    result: dict[str, Any] = {
        "meta": {
            "model": args.model, "tokens": prompt["visual"],
            "prompt": int(lm["input_ids"].shape[1]),
            "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "dtype": args.dtype, "rounds": args.rounds,
            "calls": args.calls, "command": " ".join(sys.argv),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "summary": summary, "samples": samples, "profiles": profiles,
    }  # fmt: skip
    if args.decode:
        result["decode"] = decode_profiles(model, prompt["full"], args.decode, args.profile, cuda)
    if "halfv" in profiles and "ideal" in profiles:
        a, b = profiles["halfv"], profiles["ideal"]
        result["halfv_minus_ideal"] = {
            "device": differences(a, b, "self_device_us"),
            "cpu": differences(a, b, "self_cpu_us"),
        }
    return result


def decode_profiles(
    model: Any, full: dict[str, Any], steps: int, methods: Sequence[str], cuda: bool
) -> dict[str, Any]:
    """What ``steps`` greedy decode steps cost per method: ``generate(steps + 2)`` minus
    ``generate(2)``, both profiled, on the full prompt (pixels included), so the prefill
    and setup cancel and only the decode steps remain."""

    def generate(n: int) -> Any:
        return model.generate(**full, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    out: dict[str, Any] = {}
    for method in ["unpruned", *[m for m in methods if m != "unpruned"]]:
        with bc.attach(model, method):
            generate(4)  # warm the decode path
            short, long = (
                profile_call(lambda: generate(2), cuda),
                profile_call(lambda: generate(steps + 2), cuda),
            )
            wall = [
                statistics.median(bc.time_ms(lambda n=n: generate(n), 0, 3, cuda))
                for n in (2, steps + 2)
            ]
        per_step = {
            "wall_ms": (wall[1] - wall[0]) / steps,
            "busy_device_ms": (long["busy_device_ms"] - short["busy_device_ms"]) / steps,
            "host_ms": (long["host_ms"] - short["host_ms"]) / steps,
            "kernels": (long["kernels"] - short["kernels"]) / steps,
            "syncs": {k: (long["syncs"].get(k, 0) - short["syncs"].get(k, 0)) / steps
                      for k in long["syncs"]},
        }  # fmt: skip
        out[method] = {"per_step": per_step, "cpu": differences(long, short, "self_cpu_us")}
        bc.emit(f"decode {method}: " + ", ".join(f"{k} {v}" for k, v in per_step.items()))
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=tuple(bc.KIND), default="qwen2.5-vl-7b")
    p.add_argument("--tokens", type=int, default=4096, help="nominal visual tokens")
    p.add_argument("--text-tokens", type=int, default=60)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--profile", nargs="*", choices=METHODS, default=["halfv", "ideal"])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=3, help="timed calls per method per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument(
        "--decode", type=int, default=0, help="also profile N greedy decode steps per method"
    )
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU, 2 rounds")
    p.add_argument("--out", type=Path, help="where to write the result (JSON)")
    p.add_argument("--report", type=Path, help="do not run: summarise this saved result")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.device, args.dtype, args.tokens, args.rounds, args.calls = "cpu", "float32", 128, 2, 1
        args.warmup = 1
    return args


#: aten ops whose kernels are GEMMs (the rest of the aten ops: elementwise, norms, copies)
GEMM_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul", "aten::linear")


def paired(result: dict[str, Any]) -> dict[str, float]:
    """Medians over rounds of each round's own ``halfv - ideal`` (ms) and ``ideal / halfv``."""
    h, i = result["samples"].get("halfv"), result["samples"].get("ideal")
    if not h or not i:
        return {}
    return {
        "halfv_minus_ideal_ms": statistics.median(a - b for a, b in zip(h, i, strict=True)),
        "speedup_share_of_ideal": statistics.median(b / a for a, b in zip(h, i, strict=True)),
    }


#: names the FPS loop's Triton kernel had in the profiles (``speculative_kernel`` in the v8 profile)
FPS_KERNELS = ("fps_kernel", "speculative_kernel")


def kernel_breakdown(result: dict[str, Any]) -> dict[str, float]:
    """Kernel time of the profiled halfv call minus the ideal one (ms): the FPS kernel,
    GEMMs and every other aten op (self device time, so nothing is counted twice)."""
    profiles = result.get("profiles", {})
    if not {"halfv", "ideal"} <= profiles.keys():
        return {}
    a, b = profiles["halfv"]["ops"], profiles["ideal"]["ops"]

    def delta(name: str) -> float:
        get = lambda ops: ops.get(name, {}).get("self_device_us", 0.0)  # noqa: E731
        return float(get(a) - get(b)) / 1e3

    aten = [n for n in set(a) | set(b) if n.startswith("aten::")]
    gemm = sum(delta(n) for n in aten if n in GEMM_OPS)
    other = sum(delta(n) for n in aten if n not in GEMM_OPS)
    fps = sum(delta(name) for name in FPS_KERNELS)
    return {"fps_kernel": fps, "gemm": gemm, "other_aten": other, "total": fps + gemm + other}


def report(result: dict[str, Any]) -> None:
    """Print the summary of a result: medians, paired figures, the kernel-time split and
    the operators that differ most."""
    for method, s in result["summary"].items():
        ratio = s["ratio_to_unpruned"]
        shown = "-" if ratio is None else f"{ratio:.3f}"
        bc.emit(f"{method:<9} median {s['median_ms']:.2f} ms  min {s['min_ms']:.2f}  ratio {shown}")
    for method, prof in result.get("profiles", {}).items():
        bc.emit(
            f"profile {method}: {prof['kernels']} kernels, GPU busy {prof['busy_device_ms']:.2f} "
            f"ms, host syncs {prof['syncs']}, sync ops {prof['sync_ops']}"
        )
    for name, value in paired(result).items():
        bc.emit(f"paired, median of rounds: {name} {value:.3f}")
    for name, value in kernel_breakdown(result).items():
        bc.emit(f"kernel time, halfv - ideal: {name} {value:.3f} ms")
    for kind, rows in result.get("halfv_minus_ideal", {}).items():
        bc.emit(f"halfv - ideal, {kind} time, largest differences:")
        for row in rows[:12]:
            bc.emit(f"  {row['delta_ms']:+8.3f} ms  {row['delta_count']:+5d}x  {row['op']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        report(json.loads(args.report.read_text(encoding="utf-8")))
        return 0
    if args.out is None:
        bc.emit("--out is required (or --report FILE to summarise a saved result)")
        return 2
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
