"""Fit the cost model's constants (halfv.ops.cost) for this machine's device and dtype.

Builds one LLaVA-family model with random weights (on the GPU: LLaVA-1.5-7B at real size,
bf16; with ``--cpu``: small text dims, float32, ``--threads`` threads), and times the
language-side prefill (``input_ids`` with one span of N image tokens, no pixels) of six
schedules at several (N, batch) points, the schedules in turn:

* ``unpruned``; ``ivr@a`` / ``ivr@b`` (the IVR stage alone at two layers);
* ``prune`` (IVR at ``a`` and an SSR prune); ``freeze@c1`` / ``freeze@c2`` (IVR at ``a``
  and visual rows frozen from two layers).

Per call it records the wall time (CUDA events on the GPU), the host time (the time until
the call returns, without a final synchronize: the work the host queues) and, on the GPU,
the device time (the sum of kernel durations in one ``torch.profiler`` trace). The model
is linear in its terms (:func:`halfv.ops.cost.terms`), so:

* GPU: device constants by least squares over every call's device time; host constants
  from the host times at the smallest N (where the device never holds the host back);
  then ``overlap`` from the wall times (``T = max(H, D) + overlap * min(H, D)``);
* CPU: ``overlap = 1`` (host and compute are serial) and every constant by least squares
  of the wall times (compute and Python cannot be told apart, and need not be).

    python benchmarks/calibrate_cost.py --cpu --out benchmarks/results/cost-cpu.json
    PYTHONPATH=src python benchmarks/calibrate_cost.py --out benchmarks/results/cost-h200.json
    python benchmarks/calibrate_cost.py --merge benchmarks/results/cost-h200.json  # ship it

``--merge`` puts a result's entry into ``src/halfv/ops/cost_calibration.json`` (replacing
the entry of the same device kind and dtype; ``--generic`` also as the entry every
device of that type falls back to).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import halfv
from halfv.ops.budget import kept_count
from halfv.ops.cost import (
    DEFAULT_CALIBRATION,
    DEVICE_TERMS,
    HOST_TERMS,
    CallShape,
    CostConstants,
    Option,
    Schedule,
    terms,
)
from halfv.runtime.gate import device_kind, dims_of

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling bench_cpu
import bench_cpu as bc

IVR_KEEP, SSR_KEEP = 0.5, 0.1


def schedules(layers: int) -> dict[str, tuple[halfv.PruningConfig | None, Option]]:
    """The calibration schedules for a model of ``layers`` decoder layers."""
    a, b = 2, layers // 2
    c1, c2 = layers // 2, (3 * layers) // 4
    base = {"ivr_layer": a, "ivr_keep": IVR_KEEP, "min_gain": None}
    cfg = halfv.PruningConfig
    return {
        "unpruned": (None, "none"),
        "ivr@a": (cfg(**base), "ivr"),
        "ivr@b": (cfg(**{**base, "ivr_layer": b}), "ivr"),
        "prune": (cfg(**base, ssr_layer=c2, ssr_mode="prune", ssr_keep=SSR_KEEP), "all"),
        "freeze@c1": (cfg(**base, ssr_layer=c1, ssr_mode="freeze"), "all"),
        "freeze@c2": (cfg(**base, ssr_layer=c2, ssr_mode="freeze"), "all"),
    }


def prompt(model: Any, n: int, batch: int, text: int = 60) -> dict[str, Any]:
    """``batch`` copies of: ``text // 2`` text tokens, ``n`` image tokens, the rest text."""
    gen = torch.Generator().manual_seed(0)
    head = torch.randint(10, 900, (text // 2,), generator=gen).tolist()
    tail = torch.randint(10, 900, (text - text // 2,), generator=gen).tolist()
    ids = torch.tensor([head + [model.config.image_token_id] * n + tail] * batch)
    ids = ids.to(model.device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def shape_of(n: int, batch: int, text: int, config: halfv.PruningConfig | None) -> CallShape:
    ssr = config.ssr_keep if config is not None and config.ssr_mode == "prune" else IVR_KEEP
    return CallShape(
        batch, n + text, (n,) * batch, (kept_count(n, IVR_KEEP),) * batch,
        (kept_count(n, ssr),) * batch,
    )  # fmt: skip


def schedule_of(config: halfv.PruningConfig | None) -> Schedule:
    if config is None:
        return Schedule(2, None, "none")
    mode = config.ssr_mode if config.ssr_mode in ("prune", "freeze") else "none"
    return Schedule(config.ivr_layer, config.ssr_layer, mode)  # type: ignore[arg-type]


def attach(model: Any, config: halfv.PruningConfig | None) -> AbstractContextManager[Any]:
    return nullcontext() if config is None else halfv.apply(model, config)


def host_ms(fn: Callable[[], Any], cuda: bool) -> float:
    """Time until ``fn`` returns, the device idle before it (what the host queues)."""
    if cuda:
        torch.cuda.synchronize()
    tick = time.perf_counter()
    fn()
    elapsed = (time.perf_counter() - tick) * 1e3
    if cuda:
        torch.cuda.synchronize()
    return elapsed


def device_ms(fn: Callable[[], Any]) -> float:
    """Sum of kernel durations of one call (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [
        e
        for e in prof.events()
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
    ]
    return sum(e.time_range.elapsed_us() for e in kernels) / 1e3


@torch.inference_mode()
def measure(model: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every schedule at every point, in turn; medians per (schedule, point)."""
    cuda = args.device == "cuda"
    plans = schedules(model.config.text_config.num_hidden_layers)
    rows: list[dict[str, Any]] = []
    for n, batch in args.points:
        inputs = prompt(model, n, batch, args.text_tokens)

        def call(inputs: dict[str, Any] = inputs) -> Any:
            return model(**inputs, logits_to_keep=1)

        walls: dict[str, list[float]] = {k: [] for k in plans}
        hosts: dict[str, list[float]] = {k: [] for k in plans}
        for config, _ in plans.values():
            with attach(model, config):
                bc.time_ms(call, args.warmup, 0, cuda)
        for r in range(args.repeats):
            for name, (config, _) in plans.items() if r % 2 == 0 else reversed(plans.items()):
                with attach(model, config):
                    walls[name] += bc.time_ms(call, 0, 1, cuda)
                    hosts[name].append(host_ms(call, cuda))
        for name, (config, option) in plans.items():
            row = {"schedule": name, "tokens": n, "batch": batch, "option": option,
                   "config": None if config is None else config.model_dump(),
                   "wall_ms": statistics.median(walls[name]),
                   "host_ms": statistics.median(hosts[name]), "walls": walls[name]}  # fmt: skip
            if cuda:
                with attach(model, config):
                    row["device_ms"] = device_ms(call)
            rows.append(row)
            device = row.get("device_ms", float("nan"))
            bc.emit(f"N={n:5d} B={batch:2d} {name:<10} wall {row['wall_ms']:8.2f} ms  host "
                    f"{row['host_ms']:8.2f}  device {device:8.2f}")  # fmt: skip
    return rows


def _lstsq(rows: list[list[float]], target: list[float]) -> list[float]:
    """Non-negative least squares of the *relative* residuals (each row divided by its
    target, so a 20 ms call weighs as much as a 200 ms one) with scipy's NNLS: a constant
    never comes out negative."""
    import numpy as np
    from scipy.optimize import nnls

    b = np.asarray(target, dtype=float)
    a = np.asarray(rows, dtype=float) / b[:, None]
    b = np.ones_like(b)
    scale = np.where(a.max(axis=0) > 0, a.max(axis=0), 1.0)  # columns of similar size
    solution, _ = nnls(a / scale, b)
    return [float(x) for x in solution / scale]


def fit(data: dict[str, Any]) -> dict[str, Any]:
    """The constants of one measurement run (seconds)."""
    meta, rows = data["meta"], data["rows"]
    dims = dims_of_meta(meta)
    counted = []
    for row in rows:
        config = None if row["config"] is None else halfv.PruningConfig(**row["config"])
        shape = shape_of(row["tokens"], row["batch"], meta["text_tokens"], config)
        counted.append(terms(dims, shape, schedule_of(config), row["option"]))
    const: dict[str, float] = {}
    if meta["device"] == "cuda":
        dev_keys = list(DEVICE_TERMS)
        sol = _lstsq(
            [[c[k] for k in dev_keys] for c in counted], [r["device_ms"] / 1e3 for r in rows]
        )
        const |= {DEVICE_TERMS[k]: v for k, v in zip(dev_keys, sol, strict=True)}
        small = min(r["tokens"] for r in rows)
        pick = [i for i, r in enumerate(rows) if r["tokens"] == small and r["batch"] == 1]
        host_keys = list(HOST_TERMS)
        sol = _lstsq([[counted[i][k] for k in host_keys] for i in pick],
                     [rows[i]["host_ms"] / 1e3 for i in pick])  # fmt: skip
        const |= {HOST_TERMS[k]: v for k, v in zip(host_keys, sol, strict=True)}
        num = den = 0.0
        for c, row in zip(counted, rows, strict=True):
            dev = sum(c[k] * const[v] for k, v in DEVICE_TERMS.items())
            host = sum(c[k] * const[v] for k, v in HOST_TERMS.items())
            lo, hi = min(host, dev), max(host, dev)
            num += (row["wall_ms"] / 1e3 - hi) * lo
            den += lo * lo
        const["overlap"] = min(1.0, max(0.0, num / den)) if den else 0.0
    else:  # serial: wall = host + compute; per-layer device time folds into the host's
        keys = ["flops", *HOST_TERMS]
        sol = _lstsq([[c[k] for k in keys] for c in counted], [r["wall_ms"] / 1e3 for r in rows])
        names = ["sec_per_flop", *HOST_TERMS.values()]
        const |= dict(zip(names, sol, strict=True))
        const |= {"layer_device_s": 0.0, "stage_device_s": 0.0, "overlap": 1.0}
    entry = CostConstants(
        device_kind=meta["device_kind"], dtype=meta["dtype"],
        source=f"benchmarks/calibrate_cost.py on {meta['device_name']}, {meta['date']}",
        **const,
    )  # fmt: skip
    errors = []
    from halfv.ops.cost import predict

    for row in rows:
        config = None if row["config"] is None else halfv.PruningConfig(**row["config"])
        shape = shape_of(row["tokens"], row["batch"], meta["text_tokens"], config)
        got = predict(entry, dims, shape, schedule_of(config), row["option"]).total_s * 1e3
        errors.append({"schedule": row["schedule"], "tokens": row["tokens"], "batch": row["batch"],
                       "wall_ms": row["wall_ms"], "predicted_ms": got})  # fmt: skip
    return {"entry": entry.to_dict(), "fit_check": errors}


def dims_of_meta(meta: dict[str, Any]) -> Any:
    from halfv.ops.cost import CostDims

    return CostDims(**meta["dims"])


def merge(result: Path, target: Path, generic: bool) -> None:
    """Put ``result``'s entry into the calibration file ``target``."""
    entry = json.loads(result.read_text(encoding="utf-8"))["fit"]["entry"]
    data = json.loads(target.read_text(encoding="utf-8")) if target.exists() else {"entries": []}
    new = [entry]
    if generic:
        new.append({**entry, "device_kind": entry["device_kind"].split(":", 1)[0]})
    keys = {(e["device_kind"], e["dtype"]) for e in new}
    kept = [e for e in data["entries"] if (e["device_kind"], e["dtype"]) not in keys]
    data["entries"] = kept + new
    target.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    bc.emit(f"merged {sorted(keys)} into {target}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="small model on the CPU, float32")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (--cpu)")
    p.add_argument("--points", nargs="+", default=None, help="N:batch pairs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--text-tokens", type=int, default=60)
    p.add_argument("--out", type=Path, help="results JSON (measurements and the fit)")
    p.add_argument("--refit", type=Path, help="do not measure: fit this results file again")
    p.add_argument("--merge", type=Path, help="put this result's entry into --calibration")
    p.add_argument("--generic", action="store_true", help="with --merge: also as the fallback")
    p.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    args = p.parse_args(argv)
    args.device = "cpu" if args.cpu else "cuda"
    default = ["32:1", "256:1", "768:1", "256:4"] if args.cpu else [
        "64:1", "576:1", "1152:1", "2304:1", "576:8"]  # fmt: skip
    args.points = [tuple(int(x) for x in p.split(":")) for p in args.points or default]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge is not None:
        merge(args.merge, args.calibration, args.generic)
        return 0
    if args.refit is not None:
        data = json.loads(args.refit.read_text(encoding="utf-8"))
    else:
        if not args.cpu and not torch.cuda.is_available():
            bc.emit("CUDA is not available: run on a GPU, or use --cpu")
            return 2
        if args.cpu:
            torch.set_num_threads(args.threads)
        dtype = torch.float32 if args.cpu else torch.bfloat16
        text = bc.TEXT_DIMS["small"] if args.cpu else None
        model = bc.build_model(bc.model_config("llava", text), args.device, dtype)
        dims = dims_of(model)
        assert dims is not None
        dev = torch.device(args.device, 0) if not args.cpu else torch.device("cpu")
        name = torch.cuda.get_device_name() if not args.cpu else platform.processor() or "cpu"
        meta = {"device": args.device, "device_kind": device_kind(dev), "device_name": name,
                "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
                "dims": dims.__dict__, "text_tokens": args.text_tokens,
                "points": args.points, "repeats": args.repeats, "torch": torch.__version__,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)}  # fmt: skip
        data = {"meta": meta, "rows": measure(model, args)}
    data["fit"] = fit(data)
    for key, value in data["fit"]["entry"].items():
        bc.emit(f"{key:>22}: {value}")
    for row in data["fit"]["fit_check"]:
        bc.emit(f"  {row['schedule']:<10} N={row['tokens']:5d} B={row['batch']:2d} measured "
                f"{row['wall_ms']:8.2f} ms, predicted {row['predicted_ms']:8.2f}")  # fmt: skip
    out = args.out or args.refit
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        bc.emit(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
