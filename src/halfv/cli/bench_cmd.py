"""``halfv bench``: the speed benchmarks of a source checkout (and ``accuracy``).

Examples::

    halfv bench speed --cpu-smoke --out /tmp/speed.json     # tiny models on the CPU
    halfv bench speed --models qwen2.5-vl-7b --tokens 1024 4096
    halfv bench speed --from-json benchmarks/results/speed.json --write-docs
    halfv bench cpu --markdown
    halfv bench cpu --models zoo --markdown                 # the trained zoo VLMs
    halfv bench speed --help                                # the script's own options

``speed`` and ``cpu`` run ``benchmarks/bench_speed.py`` and ``benchmarks/bench_cpu.py``
with every argument after the subcommand passed through unchanged. The scripts are not
part of the installed package: they are found in ``$HALFV_BENCHMARKS``, next to the ``src``
folder halfv is imported from (an editable install), or in ``./benchmarks``. ``accuracy``
is ``halfv bench-accuracy`` (see :mod:`halfv.cli.bench_accuracy_cmd`), when present.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import _SubParsersAction

__all__ = ["SCRIPTS", "add_parser", "find_script", "load_script", "run"]

#: ``halfv bench NAME`` -> the script it runs, and its one-line help
SCRIPTS: dict[str, tuple[str, str]] = {
    "speed": ("bench_speed.py", "GPU prefill/TTFT/decode/memory of real-size VLMs, pruned vs not"),
    "cpu": ("bench_cpu.py", "CPU prefill ratio pruned/unpruned of small random or zoo VLMs"),
}
ENV_DIR = "HALFV_BENCHMARKS"


def add_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``halfv bench`` with ``speed``, ``cpu`` (and ``accuracy`` when present)."""
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark (speed, cpu, accuracy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run, script=None)  # each benchmark sets its own func below
    benches = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, (script, help_text) in SCRIPTS.items():
        # '+' as the only prefix makes every '-' option a plain word, so the whole rest of the
        # command line reaches the script's own parser (its --help included)
        sub = benches.add_parser(
            name, help=help_text, add_help=False, prefix_chars="+", description=script
        )
        sub.add_argument("argv", nargs=argparse.REMAINDER, help=f"options of {script}")
        sub.set_defaults(func=run, script=script)
    try:
        accuracy = importlib.import_module("halfv.cli.bench_accuracy_cmd")
    except ImportError:  # optional: `halfv bench accuracy` exists only with that module
        return
    add_accuracy = getattr(accuracy, "add_accuracy_parser", None)
    if callable(add_accuracy):
        add_accuracy(benches)


def find_script(script: str) -> Path:
    """Where ``benchmarks/<script>`` is: ``$HALFV_BENCHMARKS``, the checkout, or ``./``.

    Raises:
        FileNotFoundError: in none of them (e.g. halfv installed from a wheel).
    """
    import halfv

    candidates = [Path(p) for p in [os.environ.get(ENV_DIR)] if p]
    candidates.append(Path(halfv.__file__).resolve().parents[2] / "benchmarks")
    candidates.append(Path.cwd() / "benchmarks")
    for folder in candidates:
        if (folder / script).is_file():
            return folder / script
    msg = (
        f"cannot find benchmarks/{script} (looked in {', '.join(map(str, candidates))}); the "
        f"benchmarks ship with the source checkout, not the wheel: run from the checkout or "
        f"set {ENV_DIR} to its benchmarks folder"
    )
    raise FileNotFoundError(msg)


def load_script(script: str) -> ModuleType:
    """Import ``benchmarks/<script>`` as a module, its folder first on ``sys.path``."""
    path = find_script(script)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"{path} cannot be imported as a module"
        raise FileNotFoundError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    """Run the script's ``main(argv)`` with the arguments after the subcommand."""
    if args.script is None:
        msg = f"choose a benchmark: halfv bench {{{','.join(SCRIPTS)}}} ..."
        raise ValueError(msg)
    module = load_script(args.script)
    try:
        return int(module.main(list(args.argv)) or 0)
    except SystemExit as exc:  # the script's --help or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
