"""``halfv demo``: one question about one image, with and without HalfV, offline.

Examples::

    halfv demo                       # trained zoo LLaVA if available, else a tiny random one
    halfv demo --tiny --out /tmp/demo
    halfv demo --image cat.jpg --question "What animal is this?" --kl

Prints the model used, kept visual tokens per layer, the prefill FLOPs ratio, the measured
prefill time ratio (median of 3) and both answers, and writes OUT/profile.json and
OUT/lifecycle.png (the TME lifecycle of the model on the image).
"""

from __future__ import annotations

import argparse
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    from rich.console import Console

    from halfv_lab.demo import DemoResult

__all__ = ["add_parser", "layer_runs", "print_result", "run"]


def add_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``demo`` subcommand on ``subparsers``; sets ``func=run``."""
    parser = subparsers.add_parser(
        "demo",
        help="prune one prompt on a small built-in model and compare (offline, < 1 min)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="halfv-out", metavar="DIR", help="output folder")
    parser.add_argument(
        "--tiny", action="store_true", help="use the tiny random LLaVA even if a trained one exists"
    )
    parser.add_argument(
        "--kl",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the KL probe in the profile (default: only on the tiny model)",
    )
    parser.add_argument(
        "--image", metavar="PATH", help="an image file instead of the built-in drawing"
    )
    parser.add_argument("--question", metavar="TEXT", help="the question to ask")
    parser.add_argument("--max-new-tokens", type=int, default=12, help="answer length (12)")
    parser.add_argument("--config", metavar="PATH", help="a PruningConfig file (.json/.toml)")
    parser.set_defaults(func=run)


def layer_runs(values: list[int], frozen: list[bool]) -> list[tuple[int, int, int, bool]]:
    """Group consecutive layers with equal count and frozen flag: ``(first, last, count, frozen)``.

    Example:
        >>> layer_runs([576, 288, 288, 288], [False, False, True, True])
        [(0, 0, 576, False), (1, 1, 288, False), (2, 3, 288, True)]
    """
    rows = []
    index = 0
    for (count, is_frozen), group in groupby(zip(values, frozen, strict=True)):
        n = len(list(group))
        rows.append((index, index + n - 1, count, is_frozen))
        index += n
    return rows


def print_result(result: DemoResult, console: Console) -> None:
    """Print a :class:`~halfv_lab.demo.DemoResult` to a rich console."""
    from rich.markup import escape
    from rich.table import Table

    from halfv.cli.flops_cmd import describe_schedule

    console.print(f"[bold]model:[/bold] {escape(result.model)}")
    if result.fallback_reason:
        console.print(f"  (trained checkpoint not used: {escape(result.fallback_reason)})")
    console.print(f"[bold]image:[/bold] {escape(result.image)}")
    console.print(f"[bold]question:[/bold] {escape(result.question)}")
    console.print(
        f"[bold]schedule:[/bold] {describe_schedule(result.config)} "
        f"[dim]({escape(result.schedule_source)})[/dim]"
    )
    stats = result.stats
    table = Table(title="Kept visual tokens per decoder layer (pruned prefill)")
    for column in ("layers", "visual tokens", "rows computed", "keys/values", "visual frozen"):
        table.add_column(column, justify="right")
    layers = stats.layers
    for first, last, count, frozen in layer_runs(result.kept_visual, [x.frozen for x in layers]):
        layer = layers[first]
        table.add_row(
            str(first) if first == last else f"{first}-{last}",
            str(count),
            str(layer.query_rows[0]),
            str(layer.sequence[0]),
            "yes" if frozen else "",
        )
    console.print(table)
    flops = result.flops
    console.print(
        f"[bold]prefill FLOPs[/bold] (language model, this call): pruned/full = "
        f"{flops.pruned_field / flops.full_field:.3f} field ({flops.speedup_field:.2f}x), "
        f"{flops.pruned_exact / flops.full_exact:.3f} exact ({flops.speedup_exact:.2f}x)"
    )
    console.print(
        f"[bold]prefill time[/bold] (median of 3, logits_to_keep=1): "
        f"{result.prefill_full * 1e3:.0f} ms -> {result.prefill_pruned * 1e3:.0f} ms, "
        f"pruned/full = {result.time_ratio:.3f} ({1 / result.time_ratio:.2f}x)"
    )
    console.print(f"[bold]answer without halfv:[/bold] {_quote(result.answer_full)}")
    console.print(f"[bold]answer with halfv:   [/bold] {_quote(result.answer_pruned)}")
    if result.kind == "tiny-random":
        console.print("  (random weights: the answers are noise; compare the measurements)")
    life = result.lifecycle
    mode = life.ssr_mode or "KL not probed"
    if life.detected:
        console.print(
            f"[bold]lifecycle:[/bold] suggested IVR layer {life.ivr_layer}, SSR layer "
            f"{life.ssr_layer} ({mode})"
        )
    else:
        console.print(
            "[bold]lifecycle:[/bold] none detected on this image (the whole-sequence TME "
            f"does not descend; {mode}): see the plot"
        )
    console.print(escape(f"wrote {result.profile_json} and {result.plot}"))
    console.print(f"done in {result.seconds:.1f} s")


def _quote(text: str) -> str:
    """The answer in quotes on one line (rich markup escaped)."""
    from rich.markup import escape

    return escape('"' + text.replace("\n", "\\n") + '"')


def run(args: argparse.Namespace) -> int:
    """Execute ``halfv demo``; returns 0.

    Raises:
        ValueError, FileNotFoundError: a bad image, question, config or output folder.
    """
    from rich.console import Console

    from halfv.cli.calibrate_cmd import load_base_config
    from halfv_lab.demo import DEFAULT_QUESTION, run_demo

    config = load_base_config(args.config) if args.config else None
    console = Console(highlight=False)
    with console.status("running the demo (model, 2 answers, 8 prefills, profile)..."):
        result = run_demo(
            out_dir=Path(args.out),
            tiny=args.tiny,
            kl=args.kl,
            image=args.image,
            question=args.question if args.question is not None else DEFAULT_QUESTION,
            max_new_tokens=args.max_new_tokens,
            config=config,
        )
    print_result(result, console)
    return 0
