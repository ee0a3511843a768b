"""The lab's ``halfv`` plugin: its command-line subcommands.

Declared as the ``lab`` entry point of the ``halfv`` group in ``lab/pyproject.toml``, the
group every third-party plugin uses. Importing this module imports nothing heavy; the
commands import torch, transformers and the zoo only when they run.
"""

from __future__ import annotations

import argparse
from typing import Any

from halfv import hookimpl

__all__ = ["register_commands"]


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``halfv demo``, ``halfv bench accuracy`` and the deprecated ``bench-accuracy``."""
    from halfv_lab.cli import bench_accuracy_cmd, bench_cmd, demo_cmd

    demo_cmd.add_parser(subparsers)
    bench_cmd.add_parser(subparsers)
    bench_accuracy_cmd.add_parser(subparsers)
