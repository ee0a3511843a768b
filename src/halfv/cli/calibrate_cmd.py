"""``halfv calibrate``: turn a profile into a ready-to-use pruning config file.

Examples::

    halfv calibrate --profile halfv-profile/profile.json --out halfv-config.json
    halfv calibrate --profile p.json --out c.json --base-config mine.toml --drop 0.2
    halfv calibrate --profile p.json --out c.json --freeze-below 0.01 --keep-ivr
    halfv calibrate --profile p.json --out c.json --freeze-below 0.01 --unsaturated none

The config is the base schedule (--base-config, else the profiled model's default) with
``ivr_layer``, ``ssr_layer`` and ``ssr_mode`` taken from the profile's lifecycle; keep
ratios, policies and estimator settings come from the base. --drop/--tie/--kl-threshold
re-run the stage detection on the stored curves. --freeze-below KL (opt-in) freezes the
visual tokens from the layer where the KL probe's curve falls and stays below KL; when no
layer qualifies, --unsaturated none drops the SSR stage (default: keep the lifecycle's);
--keep-ivr keeps the base's IVR layer and takes only the SSR stage from the profile. Use
the file with ``halfv.apply(model, "halfv-config.json")``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from halfv.errors import HalfvFileNotFoundError, HalfvValueError

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    from halfv.config import PruningConfig
    from halfv.profile.report import ProfileReport

__all__ = ["add_parser", "load_base_config", "run"]


def add_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``calibrate`` subcommand on ``subparsers``; sets ``func=run``."""
    parser = subparsers.add_parser(
        "calibrate",
        help="write a PruningConfig file from a `halfv profile` report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", required=True, metavar="PATH", help="profile.json to read")
    parser.add_argument("--out", required=True, metavar="PATH", help="config file to write (.json)")
    parser.add_argument(
        "--base-config", metavar="PATH", help="schedule whose ratios and policies are kept"
    )
    parser.add_argument("--drop", type=float, help="re-detect with this knee threshold")
    parser.add_argument("--tie", type=float, help="re-detect with this minimum tolerance")
    parser.add_argument("--min-depth", type=float, help="re-detect with this smallest descent")
    parser.add_argument(
        "--kl-threshold", type=float, help="re-decide the SSR mode with this KL threshold"
    )
    parser.add_argument(
        "--freeze-below",
        type=float,
        metavar="KL",
        help=(
            "opt-in: freeze the visual tokens from the layer where the profile's KL curve "
            "falls and stays below KL (e.g. 0.01), if there is one"
        ),
    )
    parser.add_argument(
        "--unsaturated",
        choices=("keep", "none"),
        default=None,
        help=(
            "with --freeze-below, when no layer qualifies: keep the lifecycle's SSR stage "
            "(keep, the default) or drop it (none)"
        ),
    )
    parser.add_argument(
        "--keep-ivr",
        action="store_true",
        help="keep the base schedule's IVR layer; take only the SSR stage from the profile",
    )
    parser.set_defaults(func=run)


def load_base_config(path: str | Path) -> PruningConfig:
    """Load a config file; :func:`halfv.load_config` already gives one-line errors naming
    the file and each bad key or value.

    Raises:
        ConfigFileNotFoundError: no such file (a ``FileNotFoundError``).
        ConfigError: unreadable, unknown keys, out-of-range values or a bad suffix.
    """
    from halfv.config import load_config

    return load_config(path)


def _check_args(args: argparse.Namespace) -> Path:
    """The output path, after refusing bad flag values (one-line errors)."""
    out = Path(args.out)
    if out.suffix != ".json":
        msg = f"--out {str(out)!r}: calibrate writes JSON, so use a name ending in .json"
        raise HalfvValueError(msg)
    if not out.parent.is_dir():
        msg = f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist; create it first"
        raise HalfvFileNotFoundError(msg)
    freeze_below = args.freeze_below
    if freeze_below is not None and not (0 < freeze_below < float("inf")):
        msg = f"--freeze-below {freeze_below}: use a positive KL value, e.g. 0.01"
        raise HalfvValueError(msg)
    if args.unsaturated is not None and freeze_below is None:
        msg = (
            f"--unsaturated {args.unsaturated}: it says what to do when no layer qualifies "
            "for --freeze-below, so pass --freeze-below KL too (e.g. 0.01)"
        )
        raise HalfvValueError(msg)
    return out


def _load_report(args: argparse.Namespace) -> ProfileReport:
    """The profile, its lifecycle re-detected when --drop/--tie/--min-depth/--kl-threshold ask."""
    from halfv.profile.lifecycle import (
        DEFAULT_DROP,
        DEFAULT_MIN_DEPTH,
        DEFAULT_TIE,
        detect_lifecycle,
    )
    from halfv.profile.report import ProfileReport
    from halfv.saturation import KLSaturationDetector

    report = ProfileReport.from_json(args.profile)
    redetect = (args.drop, args.tie, args.min_depth, args.kl_threshold)
    if all(value is None for value in redetect):
        return report
    detector = (
        KLSaturationDetector(threshold=args.kl_threshold) if args.kl_threshold is not None else None
    )
    lifecycle = detect_lifecycle(
        report.curve("whole"),
        report.kl,
        drop=DEFAULT_DROP if args.drop is None else args.drop,
        tie=DEFAULT_TIE if args.tie is None else args.tie,
        min_depth=DEFAULT_MIN_DEPTH if args.min_depth is None else args.min_depth,
        detector=detector,
        scored_layers=report.model.scored_layers,
    )
    return report.model_copy(update={"lifecycle": lifecycle})


def run(args: argparse.Namespace) -> int:
    """Execute ``halfv calibrate``; returns 0.

    Raises:
        ValueError, FileNotFoundError: a bad profile, base config, threshold or output path.
    """
    from rich.console import Console

    from halfv.cli.flops_cmd import describe_schedule
    from halfv.config import save_config
    from halfv.profile.report import suggested_config

    out = _check_args(args)
    freeze_below = args.freeze_below
    report = _load_report(args)
    base = load_base_config(args.base_config) if args.base_config else None
    config = suggested_config(
        report,
        base,
        freeze_below=freeze_below,
        keep_ivr=args.keep_ivr,
        unsaturated=args.unsaturated or "keep",
    )
    save_config(config, out)
    console = Console(highlight=False)
    life = report.lifecycle
    source = args.base_config or f"default schedule of {report.model.model_type}"
    console.print(f"profile: {report.model.description}; {report.n_inputs} input(s)")
    mode = life.ssr_mode or "not probed (kept from the base)"
    if life.detected:
        console.print(f"lifecycle: IVR layer {life.ivr_layer}, SSR layer {life.ssr_layer}", end="")
        console.print(f", SSR mode {mode}")
    else:
        console.print(
            "[bold]warning:[/bold] no lifecycle detected in this profile (the whole-sequence "
            f"TME does not descend); kept the base layers, SSR mode {mode}"
        )
    if args.keep_ivr:
        console.print(f"--keep-ivr: IVR layer {config.ivr_layer} kept from the base schedule")
    if freeze_below is not None:
        if config.ssr_mode == "freeze" and config.ssr_layer is not None:
            console.print(
                f"--freeze-below {freeze_below:g}: the KL probe stays below it from layer "
                f"{config.ssr_layer}: freeze from there"
            )
        elif args.unsaturated == "none":
            console.print(
                f"--freeze-below {freeze_below:g}: no layer qualifies; --unsaturated none: "
                "no SSR stage"
            )
        else:
            console.print(f"--freeze-below {freeze_below:g}: no layer qualifies; kept the above")
    console.print(f"wrote {out}: {describe_schedule(config)} (ratios from {source})")
    console.print(f'use it: halfv.apply(model, "{out}")')
    return 0
