"""Timings of HalfV's farthest-point sampling.

Two entry points:

* ``pytest benchmarks/bench_selection.py`` -- pytest-benchmark on the CPU for the LLaVA-1.5
  shape (N=576, k=144, D=256) and a large one (N=4096, k=1024, D=1024). Not collected by
  the default test run (``testpaths`` is ``tests/``).
* ``python benchmarks/bench_selection.py`` -- times a Qwen2.5-VL-7B high-resolution shape
  (N=16384, k=4096, D=3584, bf16 features, 10 % anchors) on CUDA with CUDA events, after a
  warm-up, and prints the median; falls back to a smaller CPU run without CUDA.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from halfv.ops.selection import farthest_point_sampling, halfv_select

CPU_CASES = [(576, 144, 256), (4096, 1024, 1024)]


def _inputs(
    n: int, dim: int, device: torch.device, dtype: torch.dtype, clusters: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scores and features; with ``clusters > 0`` the features are near-duplicates
    of that many centres (noise 0.3 of the centre's scale), like neighbouring image patches,
    instead of independent Gaussians (nearly orthogonal, every distance about 1)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn((1, n, dim), generator=generator)
    if clusters > 0:
        centres = torch.randn((clusters, dim), generator=generator)
        owner = torch.randint(0, clusters, (n,), generator=generator)
        features = centres[owner].unsqueeze(0) + 0.3 * features
    scores = torch.rand((1, n), generator=generator).to(device=device)
    return scores, features.to(device=device, dtype=dtype)


@pytest.mark.parametrize(("n", "k", "dim"), CPU_CASES, ids=str)
def test_fps_cpu(benchmark: BenchmarkFixture, n: int, k: int, dim: int) -> None:
    """Plain FPS (no seeds) on the CPU, float32 features."""
    _, features = _inputs(n, dim, torch.device("cpu"), torch.float32)
    out = benchmark.pedantic(
        farthest_point_sampling, args=(features, k), rounds=3, iterations=1, warmup_rounds=1
    )
    assert out.shape == (1, k)


@pytest.mark.parametrize(("n", "k", "dim"), CPU_CASES[:1], ids=str)
def test_halfv_select_cpu(benchmark: BenchmarkFixture, n: int, k: int, dim: int) -> None:
    """The full HalfV selection (10 % anchors, then seeded FPS) on the CPU."""
    scores, features = _inputs(n, dim, torch.device("cpu"), torch.float32)
    out = benchmark.pedantic(
        halfv_select, args=(scores, features, k, 0.1), rounds=5, iterations=1, warmup_rounds=1
    )
    assert out.shape == (1, k)


def _time_cuda(fn: Callable[[], torch.Tensor], warmup: int, repeats: int) -> list[float]:
    """Milliseconds per call, measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _time_cpu(fn: Callable[[], torch.Tensor], warmup: int, repeats: int) -> list[float]:
    """Milliseconds per call, wall clock."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")


def main() -> None:
    """Time FPS and the HalfV selection on CUDA (or a smaller CPU case without CUDA)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--sweep-warps",
        action="store_true",
        help="CUDA: also time the Gram GEMM alone and the fused greedy loop at 2-32 warps",
    )
    parser.add_argument(
        "--compare-kernels",
        action="store_true",
        help="CUDA: time the one-pick and the two-candidate (default) loop kernels, each "
        "right after a fresh Gram GEMM as in a prefill, and check they pick the same",
    )
    parser.add_argument(
        "--clusters",
        type=int,
        default=0,
        help="features near-duplicates of this many centres (0: independent Gaussians)",
    )
    args = parser.parse_args()
    if torch.cuda.is_available():
        device, dtype, timer = torch.device("cuda"), torch.bfloat16, _time_cuda
        n, k, dim = args.n, args.k, args.dim
    else:
        device, dtype, timer = torch.device("cpu"), torch.float32, _time_cpu
        n, k, dim = 4096, 1024, 1024
        _emit("CUDA not available: timing a smaller case on the CPU")
    scores, features = _inputs(n, dim, device, dtype, args.clusters)
    cases: dict[str, Callable[[], torch.Tensor]] = {
        "fps": lambda: farthest_point_sampling(features, k),
        f"halfv_select(share={args.share})": lambda: halfv_select(scores, features, k, args.share),
    }
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    _emit(
        f"device={name} N={n} k={k} D={dim} dtype={dtype} clusters={args.clusters} "
        f"torch={torch.__version__}"
    )
    for label, fn in cases.items():
        times = timer(fn, args.warmup, args.repeats)
        median = statistics.median(times)
        _emit(f"{label:28s} median {median:9.2f} ms  ({median * 1e3 / k:7.2f} us/pick)  {times}")
    if args.sweep_warps and device.type == "cuda":
        _sweep_warps(features, k, args.warmup, args.repeats)
    if args.compare_kernels and device.type == "cuda":
        _compare_kernels(scores, features, k, args.share, args.warmup + args.repeats)


def _compare_kernels(
    scores: torch.Tensor, features: torch.Tensor, k: int, share: float, repeats: int
) -> None:
    """The FPS loop of ``halfv_select`` with each kernel, timed alone right after the Gram
    GEMM that precedes it in a prefill (so the L2 cache holds what it would hold there)."""
    from halfv.ops.fps_kernel import greedy_on_gram_triton
    from halfv.ops.selection import _gram_loop_inputs, anchor_count, topk_indices

    seeds = topk_indices(scores, anchor_count(k, share))
    picks: dict[bool, torch.Tensor] = {}
    for speculate in (False, True):
        times = []
        for _ in range(repeats):
            gram, scale, dist, out = _gram_loop_inputs(features, k, seeds)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            greedy_on_gram_triton(gram, dist, out, seeds.shape[1], scale, speculate=speculate)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
            picks[speculate] = out
        new = k - seeds.shape[1]
        median = statistics.median(times[1:])  # the first call compiles
        label = "two-candidate loop" if speculate else "one-pick loop"
        _emit(
            f"{label:28s} median {median:9.3f} ms  ({median * 1e3 / new:6.3f} us/pick, {new} picks)"
        )
    _emit(f"same picks: {torch.equal(picks[False], picks[True])}")


def _sweep_warps(features: torch.Tensor, k: int, warmup: int, repeats: int) -> None:
    """The two parts of FPS on CUDA apart: the Gram GEMM, then the fused loop per warp count."""
    from halfv.ops.fps_kernel import default_num_warps, greedy_on_gram_triton
    from halfv.ops.selection import _raw_gram

    raw = _raw_gram(features)
    if raw is None:
        _emit("sweep: this torch has no bmm(out_dtype=...) on CUDA; nothing to sweep")
        return
    gram, scale = raw
    gram_ms = statistics.median(_time_cuda(lambda: _raw_gram(features)[0], warmup, repeats))  # type: ignore[index]
    _emit(f"{'gram (bf16 GEMM, fp32 out)':28s} median {gram_ms:9.2f} ms")
    b, n = scale.shape
    out = torch.empty((b, k), dtype=torch.long, device=features.device)
    for warps in (2, 4, 8, 16, 32):

        def loop(w: int = warps) -> torch.Tensor:
            dist = torch.full((b, n), 2.0, device=features.device)
            return greedy_on_gram_triton(gram, dist, out, 0, scale, num_warps=w)

        median = statistics.median(_time_cuda(loop, warmup, repeats))
        mark = " (default)" if warps == default_num_warps(n) else ""
        _emit(f"{'greedy loop, ' + str(warps) + ' warps':28s} median {median:9.2f} ms{mark}")


if __name__ == "__main__":
    main()
