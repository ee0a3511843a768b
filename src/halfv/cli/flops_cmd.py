"""``halfv flops``: prefill FLOPs and speedup of a HalfV schedule, without loading weights.

Examples::

    halfv flops --model qwen2.5-vl-7b --visual-tokens 4000
    halfv flops --model llava-1.5-7b --visual-tokens 576,576 --text-tokens 80 --json
    halfv flops --model ./my-checkpoint --config schedule.json --visual-tokens 1024
    halfv flops --table 576,1024,4096

Both FLOPs variants are printed and labelled: ``field`` is the FastV convention papers
report, ``exact`` counts GQA, the SwiGLU MLP, causal attention and HalfV's own overhead
(see ``docs/flops.md``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halfv.config import PruningConfig, load_config
from halfv.errors import HalfvValueError
from halfv.flops import FlopsReport, estimate
from halfv.flops.model_specs import ModelDims, get_model_spec, known_models

if TYPE_CHECKING:
    from argparse import _SubParsersAction

__all__ = ["add_parser", "describe_schedule", "run", "speedup_table"]

FIELD_LABEL = "field (FastV 4nd^2 + 2n^2d + 2ndm, as papers report)"
EXACT_LABEL = "exact (GQA + SwiGLU + causal attention + HalfV overhead)"


def add_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``flops`` subcommand on ``subparsers``; sets ``func=run``."""
    parser = subparsers.add_parser(
        "flops",
        help="estimate prefill FLOPs and speedup of a pruning schedule",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        help=f"shipped model ({', '.join(known_models())}) or a local checkpoint directory "
        "holding config.json (then --config is required)",
    )
    parser.add_argument(
        "--visual-tokens",
        metavar="N[,N...]",
        help="visual tokens per image span, comma-separated for several images",
    )
    parser.add_argument(
        "--text-tokens", type=int, default=60, help="non-visual prompt tokens (default 60)"
    )
    parser.add_argument(
        "--config", type=Path, help="PruningConfig file (.json/.toml) replacing the default"
    )
    parser.add_argument(
        "--ssr-mode",
        choices=("prune", "freeze", "none"),
        help="override the schedule's ssr_mode (required when it is 'auto')",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument(
        "--table",
        metavar="N1,N2,...",
        help="print a markdown table of speedups of every shipped model, default schedules",
    )
    parser.set_defaults(func=run)


def parse_counts(text: str, option: str) -> list[int]:
    """Parse ``"576"`` or ``"576,576"`` into non-negative ints.

    Raises:
        ValueError: not a comma-separated list of ints, or a negative count.
    """
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        msg = f"{option} {text!r} is not a comma-separated list of token counts, e.g. 576,1024"
        raise HalfvValueError(msg) from None
    negative = [n for n in counts if n < 0]
    if negative:
        msg = f"{option} has a negative token count {negative[0]}: counts must be >= 0"
        raise HalfvValueError(msg)
    return counts


def describe_schedule(config: PruningConfig) -> str:
    """One-line summary, e.g. ``IVR @2 keep 0.25, prune @21 keep 0.05``.

    A non-default IVR policy or option is named after the keep, e.g. ``IVR @3 keep 0.5
    (grid 0.7), no SSR`` or ``IVR @2 keep 0.25 (uniform)``.
    """
    text = f"IVR @{config.ivr_layer} keep {config.ivr_keep:g}"
    extras = [] if config.ivr_policy == "halfv" else [config.ivr_policy]
    grid = config.ivr_policy_options.get("grid_share")
    extras += [f"grid {grid:g}"] if isinstance(grid, int | float) and grid > 0 else []
    text += f" ({', '.join(extras)})" if extras else ""
    if config.ssr_mode == "none" or config.ssr_layer is None:
        return f"{text}, no SSR"
    text += f", {config.ssr_mode} @{config.ssr_layer}"
    return f"{text} keep {config.ssr_keep:g}" if config.ssr_mode == "prune" else text


def speedup_table(
    visual_tokens: Sequence[int], text_tokens: int = 60, models: Sequence[str] | None = None
) -> str:
    """Markdown table of field and exact speedups under each model's default schedule.

    Args:
        visual_tokens: one column per count (one image span each), every count >= 1.
        text_tokens: text tokens of every prompt.
        models: short names of shipped models (default: all of them).
    """
    header = ["model", "schedule", "variant", *(f"N={n}" for n in visual_tokens)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in models or known_models():
        spec = get_model_spec(name)
        reports = [estimate(spec.dims, spec.schedule, n, text_tokens) for n in visual_tokens]
        for variant, speedups in (
            ("field", [r.speedup_field for r in reports]),
            ("exact", [r.speedup_exact for r in reports]),
        ):
            cells = [spec.name, describe_schedule(spec.schedule), variant]
            cells += [f"{s:.2f}x" for s in speedups]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _resolve(args: argparse.Namespace) -> tuple[ModelDims, PruningConfig, str]:
    """Model dimensions, schedule and a description of where the schedule came from."""
    if not args.model:
        msg = f"--model is required: one of {', '.join(known_models())}, or a checkpoint dir"
        raise HalfvValueError(msg)
    config = load_config(args.config) if args.config is not None else None
    path = Path(args.model)
    if args.model.strip().lower() not in known_models() and path.is_dir():
        if config is None:
            msg = f"--model {args.model!r} is a local checkpoint with no default schedule: pass "
            msg += "--config FILE"
            raise HalfvValueError(msg)
        from transformers import AutoConfig  # slow import, only needed here

        dims = ModelDims.from_config(AutoConfig.from_pretrained(path), name=path.name)
        return dims, config, str(args.config)
    spec = get_model_spec(args.model)
    if config is None:
        return spec.dims, spec.schedule, f"default for {spec.name}"
    return spec.dims, config, str(args.config)


def run(args: argparse.Namespace) -> int:
    """Execute ``halfv flops``; returns the exit status (0).

    Raises:
        ValueError: unknown model, bad token counts, or an invalid schedule.
        FileNotFoundError: the ``--config`` file does not exist.
    """
    if args.text_tokens < 0:
        msg = f"--text-tokens {args.text_tokens} is negative: pass a count >= 0"
        raise HalfvValueError(msg)
    if args.table is not None:
        if args.config is not None or args.visual_tokens is not None:
            msg = "--table compares shipped models under default schedules: drop --config "
            msg += "and --visual-tokens (list the counts in --table)"
            raise HalfvValueError(msg)
        counts = parse_counts(args.table, "--table")
        if 0 in counts:
            msg = "--table has a count of 0: every column needs at least one visual token"
            raise HalfvValueError(msg)
        models = [get_model_spec(args.model).name] if args.model else None
        print(speedup_table(counts, args.text_tokens, models), end="")
        return 0
    if args.visual_tokens is None:
        msg = "--visual-tokens is required (e.g. --visual-tokens 576), or use --table"
        raise HalfvValueError(msg)
    spans = parse_counts(args.visual_tokens, "--visual-tokens")
    dims, config, source = _resolve(args)
    visual: int | list[int] = spans[0] if len(spans) == 1 else spans
    report = estimate(dims, config, visual, args.text_tokens, args.ssr_mode)
    mode = args.ssr_mode or config.ssr_mode
    if args.json:
        payload: dict[str, Any] = {
            **report.to_dict(),
            "visual_tokens": spans,
            "text_tokens": args.text_tokens,
            "ssr_mode": mode,
            "schedule_source": source,
            "config": config.model_dump(mode="json"),
        }
        print(json.dumps(payload, indent=2))
        return 0
    _print_rich(report, dims, config.model_copy(update={"ssr_mode": mode}), spans, source)
    return 0


def _print_rich(
    report: FlopsReport,
    dims: ModelDims,
    config: PruningConfig,
    spans: Sequence[int],
    source: str,
) -> None:
    from rich.console import Console  # lazily: keep `halfv --help` fast
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"[bold]{dims.name}[/bold] ({dims.num_layers} layers, d={dims.hidden_size}, "
        f"m={dims.intermediate_size}): {'+'.join(map(str, spans))} visual + "
        f"{report.full_loads[0].kv_tokens - sum(spans)} text tokens"
    )
    console.print(f"schedule: {describe_schedule(config)} ({source})")
    flops = Table(
        title="Prefill FLOPs of the language model (LM head excluded)",
        caption="field totals follow FastV (about one unit per multiply-add): compare "
        "speedups across variants, not totals",
    )
    for column in ("variant", "full", "pruned", "speedup"):
        flops.add_column(column, justify="left" if column == "variant" else "right")
    for label, full, pruned, speedup in (
        (FIELD_LABEL, report.full_field, report.pruned_field, report.speedup_field),
        (EXACT_LABEL, report.full_exact, report.pruned_exact, report.speedup_exact),
    ):
        flops.add_row(
            label, f"{full / 1e12:.3f} TFLOPs", f"{pruned / 1e12:.3f} TFLOPs", f"{speedup:.2f}x"
        )
    console.print(flops)
    stages = Table(title="Tokens per stage")
    for column in ("layers", "query tokens", "kv tokens", "frozen visual"):
        stages.add_column(column, justify="right")
    for stage in report.stages():
        layers = f"{stage.first_layer}-{stage.last_layer}"
        stages.add_row(
            layers, str(stage.query_tokens), str(stage.kv_tokens), str(stage.frozen_visual)
        )
    console.print(stages)
