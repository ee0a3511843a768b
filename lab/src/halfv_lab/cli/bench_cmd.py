"""``halfv bench``: the lab's benchmarks; ``halfv bench accuracy`` is the only one.

Example::

    halfv bench accuracy --device cpu --limit 50 --budgets default --check

The speed benchmarks are scripts of the repository, not commands: ``benchmarks/`` and
``docs/speed.md``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from halfv_lab.cli import bench_accuracy_cmd

if TYPE_CHECKING:
    from argparse import _SubParsersAction

__all__ = ["add_parser", "run"]


def add_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``halfv bench`` and its ``accuracy`` benchmark on ``subparsers``."""
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark of the trained zoo VLMs (accuracy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)  # `accuracy` sets its own func
    benches = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    bench_accuracy_cmd.add_accuracy_parser(benches)


def run(args: argparse.Namespace) -> int:
    """Reached only if no benchmark set its own ``func``; argparse requires one."""
    msg = f"choose a benchmark: halfv bench accuracy ... (got {args.bench!r})"
    raise ValueError(msg)
