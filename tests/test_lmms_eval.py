"""The lmms-eval plugin (integrations/halfv-lmms-eval), end to end through lmms-eval's CLI.

A local task (a dozen PIL-drawn shapes with colour questions, as local json) and a tiny
random LLaVA saved with a real processor (:mod:`tiny_pretrained`) run through
``python -m lmms_eval``, offline. The runs are judged by the results file they write, never
by lmms-eval's exit code (its CLI exits 0 when the evaluation raises): a run that writes no
results, no score or no halfv stats fails the test.

Marked ``lmms_eval``: skipped unless the ``halfv-lmms-eval`` distribution is installed
(``.ci/run`` installs it; docs/lmms-eval.md has the command).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

import halfv
from tiny_pretrained import save_tiny_llava

pytestmark = pytest.mark.lmms_eval

TASK = "halfv_tiny_shapes"
VISUAL = 64  # tiny_pretrained.IMAGE_SIZE 112 -> 8 x 8 patches
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220)}
SHAPES = ("circle", "square")
TIMEOUT_S = 240

TASK_UTILS = """
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent


def doc_to_visual(doc):
    return [Image.open(HERE / doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]
"""


def _write_task(root: Path) -> int:
    """A dozen drawn shapes with a question each; returns the number of questions."""
    rows: list[dict[str, str]] = []
    for i in range(12):
        colour = list(COLOURS)[i % 3]
        shape = SHAPES[(i // 3) % 2]
        image = Image.new("RGB", (96 + 8 * i, 96), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        box = (16 + 2 * i, 16, 72 + 2 * i, 72)
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        else:
            draw.rectangle(box, fill=COLOURS[colour])
        name = f"img{i:02d}.png"
        image.save(root / name)
        question = "what colour is the shape ?" if i % 2 == 0 else "what shape is in the image ?"
        rows.append(
            {"image": name, "question": question, "answer": colour if i % 2 == 0 else shape}
        )
    (root / "questions.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "tiny_shapes_utils.py").write_text(TASK_UTILS, encoding="utf-8")
    (root / f"{TASK}.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: {TASK}
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {root / "questions.json"}
            test_split: test
            output_type: generate_until
            doc_to_visual: !function tiny_shapes_utils.doc_to_visual
            doc_to_text: !function tiny_shapes_utils.doc_to_text
            doc_to_target: answer
            generation_kwargs:
              max_new_tokens: 3
              temperature: 0
              do_sample: false
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
                ignore_case: true
                ignore_punctuation: true
            """
        ),
        encoding="utf-8",
    )
    return len(rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lmms")
    task_dir = root / "task"
    task_dir.mkdir()
    questions = _write_task(task_dir)
    model_dir = save_tiny_llava(root / "tiny-llava")
    return {"root": root, "task_dir": task_dir, "model_dir": model_dir, "questions": questions}


class LmmsEvalFailed(AssertionError):
    """lmms-eval did not produce a results file (whatever its exit code said)."""


def run_lmms_eval(setup: dict[str, Any], name: str, model: str, model_args: str) -> dict[str, Any]:
    """Run lmms-eval's CLI on the local task; return its results JSON."""
    out = setup["root"] / f"out-{name}"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(setup["root"] / "hf-home"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "2",
    }
    env.pop("PYTHONWARNINGS", None)
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        model,
        "--model_args",
        f"pretrained={setup['model_dir']},device=cpu,dtype=float32,{model_args}",
        "--tasks",
        TASK,
        "--include_path",
        str(setup["task_dir"]),
        "--batch_size",
        "2",
        "--output_path",
        str(out),
        "--verbosity",
        "DEBUG",  # without it the CLI hides the traceback of a failed evaluation
    ]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    log = f"$ {' '.join(cmd)}\nexit code {proc.returncode}\n{tail}"
    found = sorted(out.rglob("*_results.json")) if out.exists() else []
    if not found:
        msg = f"lmms-eval wrote no results file:\n{log}"
        raise LmmsEvalFailed(msg)
    results: dict[str, Any] = json.loads(found[-1].read_text(encoding="utf-8"))
    if TASK not in results.get("results", {}):
        msg = f"no results for {TASK} in {found[-1]}:\n{log}"
        raise LmmsEvalFailed(msg)
    return results


def _score(results: dict[str, Any]) -> float:
    scores = results["results"][TASK]
    value = scores.get("exact_match,none")
    assert isinstance(value, float), f"no exact_match score in {scores}"
    assert 0.0 <= value <= 1.0
    return value


def test_pruned_run_reports_halfv_stats(setup: dict[str, Any]) -> None:
    results = run_lmms_eval(
        setup,
        "pruned",
        "halfv_llava",
        "halfv_ivr_layer=2,halfv_ivr_keep=0.25,halfv_ssr_mode=none",
    )
    _score(results)
    assert results["n-samples"][TASK]["effective"] == setup["questions"]
    stats = results.get("throughput", {})
    assert stats.get("avg_halfv_enabled") == 1.0, f"halfv was not applied: {stats}"
    assert stats["avg_halfv_visual_tokens"] == VISUAL
    assert stats["avg_halfv_kept_visual_tokens"] == halfv.kept_count(VISUAL, 0.25)
    assert stats["avg_halfv_ivr_keep"] == 0.25
    assert 0.0 < stats["avg_halfv_flops_ratio"] < 1.0
    assert stats["avg_halfv_prefill_s"] > 0.0
    assert "halfv_lmms_eval.model.HalfvLlava" in results["config"]["model_backend"]


def test_unpruned_baseline_reports_full_counts(setup: dict[str, Any]) -> None:
    results = run_lmms_eval(setup, "off", "halfv", "halfv=off")
    _score(results)
    stats = results["throughput"]
    assert stats["avg_halfv_enabled"] == 0.0
    assert stats["avg_halfv_visual_tokens"] == VISUAL
    assert stats["avg_halfv_kept_visual_tokens"] == VISUAL
    assert stats["avg_halfv_flops_ratio"] == 1.0


def test_a_failing_run_is_caught_despite_the_exit_code(setup: dict[str, Any]) -> None:
    with pytest.raises(LmmsEvalFailed, match=r"ivr_keep[\s\S]*less than or equal to 1"):
        run_lmms_eval(setup, "bad", "halfv_llava", "halfv_ivr_keep=2.0")
