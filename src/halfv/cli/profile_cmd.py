"""``halfv profile``: measure the TME lifecycle of a model and suggest its HalfV layers.

Examples::

    halfv profile --model llava --images cat.png dog.jpg --prompt "What animal is this?"
    halfv profile --model qwen2_5_vl --image-dir photos/ --limit 20 --prompt "Describe it." --no-kl
    halfv profile --model llava --trained --image-dir photos/ --raw-prompt "<image>\\nCaption:"

Writes OUT/profile.json and OUT/lifecycle.png (both or neither) and prints a table. The
model is the trained zoo checkpoint of the family with --trained, else a tiny random
model of the family (runs anywhere; its curves show the method, not a trained model).
--prompt is a question (the chat template places the image; an optional <image> marks
another position); --raw-prompt is used as is and must contain <image>. Then run
`halfv calibrate --profile OUT/profile.json --out config.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halfv.errors import HalfvValueError

if TYPE_CHECKING:
    from argparse import _SubParsersAction

__all__ = ["add_parser", "check_estimator", "parse_options", "run"]

FAMILY_CHOICES = (
    "llava",
    "qwen2_5_vl",
    "internvl",
    # tiny random only (issue #20; halfv.profile.more_families)
    "llava_onevision",
    "llava_next_video",
    "paligemma",
    "idefics3",
    "smolvlm",
    "mistral3",
)


def add_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``profile`` subcommand on ``subparsers``; sets ``func=run``."""
    parser = subparsers.add_parser(
        "profile",
        help="measure the per-layer TME lifecycle and suggest IVR/SSR layers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", choices=FAMILY_CHOICES, default="llava", help="model family")
    parser.add_argument(
        "--trained",
        action="store_true",
        help="use the trained zoo checkpoint (halfv_lab.zoo.load_trained), not a tiny random model",
    )
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--images", nargs="+", metavar="PATH", help="image files")
    images.add_argument("--image-dir", metavar="DIR", help="a folder of images (sorted by name)")
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", metavar="TEXT", help="the question asked about every image")
    prompts.add_argument(
        "--raw-prompt", metavar="TEXT", help="a complete prompt with one <image> placeholder"
    )
    parser.add_argument("--limit", type=int, metavar="N", help="profile at most N images")
    parser.add_argument(
        "--out",
        default="halfv-profile",
        metavar="DIR",
        help="output folder (default halfv-profile)",
    )
    parser.add_argument(
        "--no-kl", action="store_true", help="skip the KL probe (it costs L forwards per image)"
    )
    parser.add_argument("--estimator", default="tme", help="entropy estimator name (default tme)")
    parser.add_argument(
        "--estimator-options", metavar="JSON", help="estimator options, e.g. '{\"k\": 4}'"
    )
    parser.add_argument("--drop", type=float, default=0.1, help="knee threshold (default 0.1)")
    parser.add_argument("--tie", type=float, default=0.02, help="minimum tie tolerance (0.02)")
    parser.add_argument(
        "--min-depth", type=float, default=0.05, help="smallest descent that counts (0.05)"
    )
    parser.add_argument(
        "--layers", type=int, default=8, help="decoder layers of the tiny random model (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny random model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    parser.set_defaults(func=run)


def parse_options(text: str | None, option: str = "--estimator-options") -> dict[str, Any]:
    """Parse a JSON object of options (``None`` -> ``{}``).

    Raises:
        ValueError: not JSON, or not an object.
    """
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{option} {text!r} is not JSON ({exc.msg}): pass an object, e.g. '{{\"k\": 4}}'"
        raise HalfvValueError(msg) from None
    if not isinstance(data, dict):
        msg = f"{option} {text!r} is not a JSON object: pass e.g. '{{\"k\": 4}}'"
        raise HalfvValueError(msg)
    return data


def check_estimator(name: str, options: dict[str, Any]) -> None:
    """Build the estimator once, turning a pydantic error into one line.

    Raises:
        ValueError: invalid options (each bad field with its value and the problem).
        UnknownComponentError: no estimator of that name.
    """
    from pydantic import ValidationError

    from halfv.plugins import get_estimator
    from halfv.profile.report import validation_message

    try:
        get_estimator(name, **options)
    except ValueError as exc:
        if not isinstance(exc.__cause__, ValidationError):
            raise
        msg = (
            f"--estimator-options for {name!r}: {validation_message(exc.__cause__)}; "
            "see `halfv plugins` for the estimator's options"
        )
        raise HalfvValueError(msg) from None


def run(args: argparse.Namespace) -> int:
    """Execute ``halfv profile``; returns 0.

    Raises:
        ValueError, FileNotFoundError: bad images, prompt, options or output folder.
        HalfvError: the trained model cannot be loaded, or an unknown estimator.
    """
    from rich.console import Console

    from halfv.profile.inputs import Prompt, find_images, load_images
    from halfv.profile.lifecycle import check_thresholds
    from halfv.profile.runner import profile_images, write_outputs
    from halfv.profile.sources import build_tiny, load_trained_source

    # every user input is checked before a model is built
    if args.prompt is None and args.raw_prompt is None:
        msg = "a prompt is required: --prompt 'What is shown?' or --raw-prompt '<image> ...'"
        raise HalfvValueError(msg)
    prompt = Prompt.parse(args.raw_prompt or args.prompt, raw=args.raw_prompt is not None)
    paths = find_images(args.images, args.image_dir, args.limit)
    load_images(paths)  # fail on an unreadable file now, not after the model is built
    options = parse_options(args.estimator_options)
    check_estimator(args.estimator, options)
    check_thresholds(args.drop, args.tie, args.min_depth)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        msg = f"--out {str(out)!r} exists and is not a folder: pick a folder name"
        raise HalfvValueError(msg)

    console = Console(highlight=False)
    if args.trained:
        source = load_trained_source(args.model)
    else:
        source = build_tiny(args.model, layers=args.layers, seed=args.seed)
    if not args.quiet:
        console.print(f"model: {source.description}")
    report = profile_images(
        source,
        paths,
        prompt,
        estimator=args.estimator,
        estimator_options=options,
        with_kl=not args.no_kl,
        drop=args.drop,
        tie=args.tie,
        min_depth=args.min_depth,
        console=console,
        progress=not args.quiet,
    )
    json_path, plot_path = write_outputs(report, out)
    if not args.quiet:
        report.render_table(console)
    console.print(f"wrote {json_path} and {plot_path}")
    console.print(f"next: halfv calibrate --profile {json_path} --out halfv-config.json")
    return 0
