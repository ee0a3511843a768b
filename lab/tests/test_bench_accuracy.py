"""The accuracy-retention benchmark: schedules, FLOPs matching, check, reports, a tiny run.

The end-to-end tests use a tiny random-init LLaVA (``tests/tiny.py``) behind a small
processor that speaks the zoo's ``VQAProcessor`` interface, so the zoo's own
``answer_questions`` / ``accuracy`` and the ``halfv bench accuracy`` command run for real
in a few seconds. Item answers are set to the unpruned model's predictions, so unpruned
accuracy is 1 and retention is the share of answers pruning leaves unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import halfv_lab.bench as hb
from halfv.config import PruningConfig
from halfv.flops.model_specs import ModelDims
from halfv_lab.bench import gate, report
from halfv_lab.bench.accuracy import BenchModel, BenchSettings, plan_runs, run_accuracy_benchmark
from halfv_lab.data import VQAItem
from tiny import build_llava

SMOL = ModelDims("smollm2-135m", 576, 1536, 30, 9, 3, 64, 49152)
QWEN_LIKE = PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=23, ssr_mode="prune", ssr_keep=0.05)
LLAVA_LIKE = PruningConfig(
    ivr_layer=3,
    ivr_keep=0.5,
    ivr_policy_options={"attention_share": 0.2},
    ssr_layer=14,
    ssr_mode="freeze",
)


# --------------------------------------------------------------------------- schedules
def test_parse_budgets() -> None:
    budgets = hb.parse_budgets("default, 0.5,0.25,0.50")
    assert [b.label for b in budgets] == ["default", "0.5", "0.25"]
    assert budgets[0].resolve(0.3) == 0.3
    assert budgets[1].resolve(0.3) == 0.5
    for bad in ("0", "1.5", "half", ""):
        with pytest.raises(ValueError, match=r"budget|no budgets"):
            hb.parse_budgets(bad)


def test_halfv_and_baseline_schedules() -> None:
    assert hb.halfv_at_budget(QWEN_LIKE, 0.25) is QWEN_LIKE  # the default budget is the default
    cfg = hb.halfv_at_budget(QWEN_LIKE, 0.11)
    assert (cfg.ivr_keep, cfg.ssr_layer, cfg.ssr_mode) == (0.11, 23, "prune")
    assert cfg.ssr_keep == pytest.approx(0.022)
    frozen = hb.halfv_at_budget(LLAVA_LIKE, 0.05)
    assert (frozen.ivr_keep, frozen.ssr_mode, frozen.ivr_policy_options["attention_share"]) == (
        0.05,
        "freeze",
        0.2,
    )
    cfg = hb.baseline_config("random", 3, 0.25, seed=7)
    assert (cfg.ivr_layer, cfg.ivr_keep, cfg.ssr_mode) == (3, 0.25, "none")
    assert cfg.ivr_policy_options == {"seed": 7}
    assert hb.baseline_config("uniform", 2, 0.5).ivr_policy_options == {}


@pytest.mark.parametrize("policy", hb.BASELINES)
@pytest.mark.parametrize("budget", [0.5, 0.25, 0.11, 0.05])
@pytest.mark.parametrize("base", [QWEN_LIKE, LLAVA_LIKE], ids=["prune", "freeze"])
def test_match_flops_hits_target_within_one_token(
    policy: str, budget: float, base: PruningConfig
) -> None:
    visual, text = 576, 30
    target = hb.flops_ratio(SMOL, hb.halfv_at_budget(base, budget), visual, text)

    def make(keep: float) -> PruningConfig:
        return hb.baseline_config(policy, base.ivr_layer, keep)

    match = hb.match_flops(SMOL, make, target, visual, text)
    assert match.matched
    assert match.ratio == pytest.approx(hb.flops_ratio(SMOL, make(match.keep), visual, text))
    # no other kept count is closer to the target, and the error is below one token's step
    neighbours = [c for c in (match.count - 1, match.count + 1) if 1 <= c < visual]
    for count in neighbours:
        other = hb.flops_ratio(SMOL, make(count / visual), visual, text)
        assert abs(match.ratio - target) <= abs(other - target) + 1e-15
    step = max(
        abs(hb.flops_ratio(SMOL, make(c / visual), visual, text) - match.ratio) for c in neighbours
    )
    assert abs(match.ratio - target) <= step
    assert abs(match.ratio - target) < 2e-3


def test_match_flops_clamps_unreachable_targets() -> None:
    def make(keep: float) -> PruningConfig:
        return hb.baseline_config("random", 2, keep)

    low = hb.match_flops(SMOL, make, 1e-6, 576, 30)
    assert (low.count, low.matched) == (1, False)
    high = hb.match_flops(SMOL, make, 1.5, 576, 30)
    assert (high.count, high.matched) == (575, False)


def _fake_bench(config: PruningConfig, calibrated: PruningConfig | None = None) -> BenchModel:
    names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    names += ("num_key_value_heads", "head_dim", "vocab_size")
    text = SimpleNamespace(**dict(zip(names, (576, 1536, 30, 9, 3, 64, 49152), strict=True)))
    model = SimpleNamespace(config=SimpleNamespace(text_config=text, name_or_path="fake"))
    return BenchModel(model, None, config, calibrated, visual_tokens=576, text_tokens=30)


def test_plan_runs_views_and_targets() -> None:
    with pytest.raises(ValueError, match="unknown method 'fastv'"):
        BenchSettings(methods=("fastv",))
    calibrated = QWEN_LIKE.model_copy(update={"ivr_layer": 3, "ssr_layer": 20})
    bench = _fake_bench(QWEN_LIKE, calibrated)
    settings = BenchSettings(budgets=hb.parse_budgets("default,0.11"))
    specs = plan_runs(bench, settings, 576, 30)
    assert specs[0].method == "unpruned"
    assert specs[0].config is None
    assert len(specs) == 1 + 2 * (2 + 2 * len(hb.BASELINES))
    halfv = {s.budget: s for s in specs if s.method == "halfv"}
    assert halfv["default"].config == QWEN_LIKE
    for spec in specs[1:]:
        assert spec.config is not None
        if spec.method in hb.BASELINES:
            assert spec.config.ivr_layer == QWEN_LIKE.ivr_layer
            assert not spec.config.ssr_active
        if spec.view == "flops":
            assert spec.target_flops_ratio == halfv[spec.budget].flops_ratio
            assert spec.flops_ratio == pytest.approx(spec.target_flops_ratio, abs=2e-3)
        elif spec.method in hb.BASELINES:
            assert spec.config.ivr_keep == halfv[spec.budget].config.ivr_keep
    cal = [s for s in specs if s.method == "halfv-calibrated"]
    assert [s.config.ivr_layer for s in cal] == [3, 3]
    only = BenchSettings(("halfv", "random"), hb.parse_budgets("default"), views=("budget",))
    planned = [(s.method, s.view) for s in plan_runs(bench, only, 576, 30)]
    assert planned == [("unpruned", "none"), ("halfv", "budget"), ("random", "budget")]


# --------------------------------------------------------------------------- check / report
def _entry(family: str, dataset: str, method: str, budget: str, acc: float, **kw: Any) -> dict:
    n = kw.pop("n", 100)
    view = kw.pop("view", "none" if method == "unpruned" else "budget")
    ratio = kw.pop("ratio", 1.0 if method == "unpruned" else 0.3)
    return {
        "family": family, "dataset": dataset, "method": method, "view": view, "budget": budget,
        "keep": kw.pop("keep", 1.0), "n": n, "accuracy": acc, "correct": acc * n,
        "retention": None, "agreement": None, "flops_ratio": ratio, "speedup": 1 / ratio,
        "flops_matched": kw.pop("matched", None), **kw,
    }  # fmt: skip


def _results(halfv_acc: float, random_acc: float, family: str = "llava") -> dict[str, Any]:
    entries = []
    for dataset in ("easyvqa", "synthetic"):
        entries += [
            _entry(family, dataset, "unpruned", "", 0.8),
            _entry(family, dataset, "halfv", "default", halfv_acc, keep=0.5),
            _entry(family, dataset, "random", "default", random_acc, keep=0.5),
            _entry(family, dataset, "random", "default", random_acc - 0.1, view="flops"),
        ]
    return {"schema": "halfv-bench-accuracy/1", "meta": {}, "entries": entries}


def test_pooled_entries_sum_correct_answers() -> None:
    entries = [
        _entry("a", "x", "unpruned", "", 0.5, n=10),
        _entry("a", "y", "unpruned", "", 1.0, n=30),
        _entry("a", "x", "halfv", "default", 0.5, n=10, ratio=0.2),
        _entry("a", "y", "halfv", "default", 0.5, n=30, ratio=0.4),
    ]
    pooled = {
        r["method"]: r for r in report.pooled_entries(entries) if r["dataset"] == report.POOLED
    }
    assert pooled["unpruned"]["accuracy"] == pytest.approx(35 / 40)
    assert pooled["halfv"]["accuracy"] == pytest.approx(0.5)
    assert pooled["halfv"]["retention"] == pytest.approx(0.5 / (35 / 40))
    assert pooled["halfv"]["flops_ratio"] == pytest.approx((0.2 * 10 + 0.4 * 30) / 40)


def test_check_passes_and_fails() -> None:
    ok = gate.check_results(_results(0.79, 0.7))
    assert ok.ok, ok.lines
    assert any("retention 0.988" in line for line in ok.lines)
    low = gate.check_results(_results(0.75, 0.7))  # retention 0.9375
    assert not low.ok
    assert any(line.startswith("FAIL llava: halfv retention 0.938") for line in low.lines)
    assert gate.check_results(_results(0.75, 0.7), min_retention=0.9).ok
    below = gate.check_results(_results(0.78, 0.79))
    assert not below.ok
    assert any("< random (budget view" in line for line in below.lines)
    assert gate.check_results(_results(0.78, 0.79), margin=0.02).ok


def test_check_can_test_the_shipped_schedule_instead() -> None:
    results = _results(0.70, 0.75)  # the adapter default fails
    for dataset in ("easyvqa", "synthetic"):
        entry = _entry("llava", dataset, "halfv-calibrated", "default", 0.79, keep=0.5)
        results["entries"].append(entry)
    assert not gate.check_results(results).ok
    shipped = gate.check_results(results, method="halfv-calibrated")
    assert shipped.ok, shipped.lines
    assert any(line.startswith("ok   llava: halfv-calibrated retention") for line in shipped.lines)
    results["entries"] = [e for e in results["entries"] if e["method"] != "halfv-calibrated"]
    missing = gate.check_results(results, method="halfv-calibrated")
    assert not missing.ok
    assert any("no halfv-calibrated result" in line for line in missing.lines)


def test_paired_sign_test() -> None:
    assert gate.paired_sign_test("1100", "1100") == (0, 0, 1.0)
    only_ours, only_theirs, p = gate.paired_sign_test("0000011", "1111100")
    assert (only_ours, only_theirs) == (2, 5)
    assert p == pytest.approx((math.comb(7, 5) + math.comb(7, 6) + 1) / 2**7)
    assert gate.paired_sign_test("0" * 8, "1" * 8)[2] == pytest.approx(1 / 256)
    assert gate.paired_sign_test("1" * 8, "0" * 8)[2] == 1.0
    with pytest.raises(ValueError, match="differ in length: 2 and 3"):
        gate.paired_sign_test("10", "101")


def test_check_with_alpha_judges_random_by_the_paired_test() -> None:
    # 50 questions per dataset; random answers 4 more right in all (66 vs 62 of 100: 8
    # questions only it gets, 4 only HalfV gets), which a paired test does not call a
    # difference (p = P(X >= 8 | 12, 1/2) = 794 / 4096)
    results = _results(0.62, 0.65)
    for e in results["entries"]:
        if e["method"] == "halfv":
            e["hits"] = "1" * 31 + "0" * 19
        elif e["method"] == "random" and e["view"] == "budget":
            e["hits"] = "1" * 29 + "0" * 2 + "1" * 4 + "0" * 15  # 2 lost, 4 won
    results["entries"] = [e for e in results["entries"] if e["view"] != "flops"]
    assert not gate.check_results(results, 0.5).ok  # the plain accuracy comparison
    paired = gate.check_results(results, 0.5, alpha=0.05)
    assert paired.ok, paired.lines
    assert any(
        "right on 4, only random on 8; random ahead at p = 0.194" in line for line in paired.lines
    )
    for e in results["entries"]:
        if e["method"] == "random":
            e["hits"] = "1" * 45 + "0" * 5  # 14 won, 0 lost per dataset: a real gap
    clear = gate.check_results(results, 0.5, alpha=0.05)
    assert not clear.ok
    assert any(line.startswith("FAIL llava") and "p = 0.000" in line for line in clear.lines)
    del results["entries"][1]["hits"]
    missing = gate.check_results(results, 0.5, alpha=0.05)
    assert any("no per-question hits" in line for line in missing.lines)


def test_check_fails_on_missing_rows() -> None:
    no_random = _results(0.8, 0.7)
    no_random["entries"] = [e for e in no_random["entries"] if e["method"] != "random"]
    outcome = gate.check_results(no_random)
    assert not outcome.ok
    assert any("no random baseline" in line for line in outcome.lines)
    no_default = _results(0.8, 0.7)
    for e in no_default["entries"]:
        e["budget"] = "0.25" if e["method"] != "unpruned" else ""
    assert not gate.check_results(no_default).ok
    assert not gate.check_results({"entries": []}).ok


def test_target_rows() -> None:
    results = _results(0.79, 0.7)
    none = [{"family": "llava", "method": None, "budget": None}]
    assert report.target_rows(results) == none  # FLOPs ratio 0.3: under 4x
    for e in results["entries"]:
        if e["method"] != "unpruned":
            e["flops_ratio"] = 0.2
    (row,) = report.target_rows(results)
    assert row["method"] == "halfv"
    assert row["retention_ok"]
    assert row["beats_baselines"]
    assert row["best_baseline"] == "random"
    assert row["best_baseline_flops_ratio"] == pytest.approx(0.2)


def test_target_rows_compare_calibrated_schedules_at_equal_flops() -> None:
    results = _results(0.79, 0.7)
    for e in results["entries"]:
        if e["method"] != "unpruned":
            e["flops_ratio"] = 0.2
    calibrated = [
        {**e, "method": "halfv-calibrated", "flops_ratio": 0.205, "accuracy": 0.65, "correct": 65}
        for e in results["entries"]
        if e["method"] == "halfv"
    ]
    far = [{**e, "flops_ratio": 0.12} for e in calibrated]
    rows = report.target_rows({**results, "entries": [*results["entries"], *calibrated]})
    cal = next(r for r in rows if r["method"] == "halfv-calibrated")
    assert cal["best_baseline"] == "random"  # 0.2 is within 0.01 of 0.205
    assert cal["beats_baselines"] is False  # 0.65 < 0.7
    assert not cal["retention_ok"]
    # a calibrated row with no baseline near its FLOPs has no verdict, not a made-up one
    rows = report.target_rows({**results, "entries": [*results["entries"], *far]})
    cal = next(r for r in rows if r["method"] == "halfv-calibrated")
    assert cal["best_baseline"] is None
    assert cal["beats_baselines"] is None
    table = report.markdown_report({**results, "entries": [*results["entries"], *far]})
    assert "| llava | halfv-calibrated | default | 0.120 |" in table


def test_reports_are_written_atomically(tmp_path: Path) -> None:
    results = _results(0.79, 0.7)
    paths = report.write_outputs(results, tmp_path / "out")
    table = paths["table"].read_text()
    assert "**llava**" in table
    assert "| halfv | budget | default |" in table
    assert "easyvqa acc / ret" in table
    assert "0.790 / 0.988" in table
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"retention_vs_flops.png", "table.md"}
    assert report.markdown_report({"entries": []}) == "No results yet.\n"


def test_update_docs_replaces_only_the_block(tmp_path: Path) -> None:
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    start, end = report.DOCS_START, report.DOCS_END
    docs.write_text(f"# B\n\nintro\n\n{start}\nnot yet run\n{end}\n\n## Speed\n")
    plot = docs.parent / "assets" / "retention_vs_flops.png"
    results = _results(0.79, 0.7)
    report.write_outputs(results, plot.parent)
    report.update_docs(docs, results, plot)
    text = docs.read_text()
    assert text.startswith(f"# B\n\nintro\n\n{start}\n")
    assert text.endswith(f"{end}\n\n## Speed\n")
    assert "not yet run" not in text
    assert "**llava**" in text
    assert "](assets/retention_vs_flops.png)" in text
    report.update_docs(docs, results, tmp_path / "elsewhere.png")  # outside docs: not linked
    assert "retention_vs_flops.png)" not in docs.read_text()
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="accuracy-table:start"):
        report.update_docs(tmp_path / "plain.md", results)


def test_store_keeps_earlier_entries_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    old = [_entry("a", "x", m, "0.5", 0.5) for m in ("unpruned", "halfv")]
    hb.ResultsStore(path, {}, old).write()
    store = hb.ResultsStore.open(path, {"run": 2}, resume=True)
    store.add({**old[1], "accuracy": 0.25})  # an interrupted resume keeps the rest
    assert hb.load_results(path)["entries"] == [{**old[1], "accuracy": 0.25}, old[0]]
    store.close()
    assert hb.load_results(path) == {
        "schema": hb.SCHEMA,
        "meta": {"run": 2},
        "entries": [store.entries[0]],
    }


# --------------------------------------------------------------------------- tiny end to end
IMAGE_TOKEN, EOS, PAD = 998, 2, 0


class TinyProcessor:
    """The zoo ``VQAProcessor`` interface for ``tiny.build_llava`` (112 px, 64 tokens)."""

    num_visual_tokens = 64
    eos_token_id = EOS
    pad_token_id = PAD

    def prompt_ids(self, question: str) -> list[int]:
        text = [10 + (ord(c) * 31 + k) % 800 for k, c in enumerate(question[-8:])]
        return [*text[:3], *[IMAGE_TOKEN] * self.num_visual_tokens, *text[3:]]

    def __call__(
        self, images: Sequence[Image.Image], questions: Sequence[str], **kw: Any
    ) -> dict[str, torch.Tensor]:
        rows = [self.prompt_ids(q) for q in questions]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), PAD)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        arrays = np.stack([np.asarray(im.resize((112, 112)), dtype=np.float32) for im in images])
        pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}

    def decode(self, ids: torch.Tensor) -> str:
        return " ".join(str(int(i)) for i in ids if int(i) not in (EOS, PAD))


@pytest.fixture(scope="module")
def tiny_bench() -> tuple[BenchModel, list[VQAItem]]:
    evaluate = pytest.importorskip("halfv_lab.zoo.evaluate", exc_type=ImportError)
    model = build_llava(layers=6, image_size=112).model
    model.generation_config.pad_token_id = PAD
    processor = TinyProcessor()
    images = [Image.new("RGB", (40, 40), (50 * i, 250 - 50 * i, 30 * i)) for i in range(5)]
    items = [VQAItem(im, f"question {i}?", "", "fake") for i, im in enumerate(images)]
    preds = evaluate.answer_questions(model, processor, items, batch_size=2, max_new_tokens=2)
    answers = map(evaluate.normalize_answer, preds)
    items = [replace(it, answer=a) for it, a in zip(items, answers, strict=True)]
    return BenchModel(model, processor), items


def test_tiny_end_to_end_and_resume(tiny_bench: tuple[Any, list[VQAItem]], tmp_path: Path) -> None:
    bench, items = tiny_bench
    budgets = hb.parse_budgets("default,0.25")
    settings = BenchSettings(("halfv", "random"), budgets, batch_size=2, max_new_tokens=2)
    path = tmp_path / "results.json"
    store = hb.ResultsStore.open(path, {"command": "test"})
    datasets = {"a": items, "b": items[:3]}
    run_accuracy_benchmark({"tiny": bench}, datasets, settings, store=store, progress=False)
    results = hb.load_results(path)
    entries = results["entries"]
    assert len(entries) == 2 * (1 + 2 * (1 + 2))
    unpruned = [e for e in entries if e["method"] == "unpruned"]
    assert [e["accuracy"] for e in unpruned] == [1.0, 1.0]
    assert all(len(e["predictions"]) == e["n"] for e in unpruned)
    for e in entries:
        assert 0.0 <= e["accuracy"] <= 1.0
        assert e["retention"] == pytest.approx(e["accuracy"])
        if e["method"] != "unpruned":
            assert 0.0 < e["flops_ratio"] < 1.0
            assert "predictions" not in e
            assert 0 < e["measured_flops_ratio"] < 1
            assert e["visual_tokens"] == 64
    default = next(e for e in entries if e["method"] == "halfv" and e["budget"] == "default")
    assert default["config"]["ivr_layer"] == 1  # llava's schedule scaled to 6 layers
    assert gate.check_results(results).lines  # the check runs on real results

    calls: list[int] = []

    def counting(*args: Any, **kw: Any) -> list[str]:
        calls.append(1)
        return ["x"] * len(args[2])

    resumed = hb.ResultsStore.open(path, {"command": "resume"}, resume=True)
    run_accuracy_benchmark(
        {"tiny": lambda: bench}, datasets, settings, answer=counting, store=resumed, progress=False
    )
    assert calls == []
    again = hb.load_results(path)
    assert again["meta"] == {"command": "resume"}
    assert again["entries"] == entries


def test_reused_image_features_change_no_answer(
    tiny_bench: tuple[BenchModel, list[VQAItem]],
) -> None:
    import halfv
    from halfv_lab.bench.reuse import reuse_image_features
    from halfv_lab.zoo.evaluate import answer_questions

    bench, items = tiny_bench
    model, proc = bench.model, bench.processor
    cfg = bench.default_schedule()

    def answers() -> list[list[str]]:
        out = [answer_questions(model, proc, items, batch_size=2, max_new_tokens=2)]
        with halfv.apply(model, cfg):
            out.append(answer_questions(model, proc, items, batch_size=2, max_new_tokens=2))
        return out

    fresh = answers()
    with reuse_image_features(model) as cache:
        reused = answers()
    assert reused == fresh
    assert cache is not None
    assert (cache.calls, cache.computed) == (6, 3)  # 3 batches, the tower ran once for each
    assert "get_image_features" not in vars(model.model)  # the method is back
    with reuse_image_features(model, enabled=False) as off:
        assert off is None
    with reuse_image_features(SimpleNamespace()) as unsupported:
        assert unsupported is None

    # in the benchmark (on by default on the CPU): every run's answers are unchanged
    recorded: dict[bool, list[list[str]]] = {True: [], False: []}
    for reuse in (False, True):

        def answer(*args: Any, reuse: bool = reuse, **kw: Any) -> list[str]:
            recorded[reuse].append(answer_questions(*args, **kw))
            return recorded[reuse][-1]

        settings = BenchSettings(("halfv", "random"), batch_size=2, reuse_vision=reuse)
        run_accuracy_benchmark(
            {"tiny": bench}, {"a": items}, settings, answer=answer, progress=False
        )
    assert recorded[True] == recorded[False]
    assert len(recorded[True]) > 2


def test_cli_check_and_report_only(
    tiny_bench: tuple[BenchModel, list[VQAItem]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import halfv_lab.data
    import halfv_lab.zoo
    from halfv.cli import main

    bench, items = tiny_bench

    def load_trained(family: str, checkpoint: Any = None, **kw: Any) -> tuple[Any, Any]:
        if family != "llava":
            msg = f"no trained {family} checkpoint at /nowhere"
            raise FileNotFoundError(msg)
        return bench.model, bench.processor

    monkeypatch.setattr(halfv_lab.zoo, "load_smollm2", lambda dtype: (None, None))
    monkeypatch.setattr(halfv_lab.zoo, "load_trained", load_trained)
    monkeypatch.setattr(halfv_lab.data, "load_split", lambda name, split, limit: items[:limit])
    out = tmp_path / "out"
    common = ["--datasets", "easyvqa,synthetic", "--limit", "4", "--out", str(out)]
    args = ["bench", "accuracy", *common, "--budgets", "default", "--methods", "halfv,random"]
    args += ["--views", "budget", "--device", "cpu", "--batch-size", "2", "--no-progress"]
    missing = main([*args, "--families", "llava,internvl"])
    assert missing == 2
    assert not out.exists()
    rc = main([*args, "--families", "llava", "--check", "--min-retention", "0.0"])
    results = hb.load_results(out / "results.json")
    expected = gate.check_results(results, 0.0)
    assert rc == (0 if expected.ok else 1)
    assert results["meta"]["command"].startswith("halfv bench accuracy --families llava")
    assert {e["n"] for e in results["entries"]} == {4}
    table = (out / "table.md").read_text()
    (out / "table.md").unlink()
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"{report.DOCS_START}\nnot yet run\n{report.DOCS_END}\n")
    report_only = ["bench", "accuracy", "--report-only", "--out", str(out)]
    report_only += ["--update-docs", str(docs)]
    assert main(report_only) == 0
    assert (out / "table.md").read_text() == table
    assert "**llava**" in docs.read_text()
    assert json.loads((out / "results.json").read_text()) == results
    assert main([*args, "--families", "llava", "--check", "--methods", "halfv"]) == 2
    shipped = ["--check", "--check-method", "halfv-calibrated"]
    assert main([*args, "--families", "llava", *shipped]) == 2  # halfv-calibrated not run
    assert (
        "--check compares halfv-calibrated (--check-method) with random" in capsys.readouterr().err
    )


def test_calibrated_schedules_default_to_the_shipped_ones(tmp_path: Path) -> None:
    from halfv_lab.cli.bench_accuracy_cmd import with_shipped_schedules
    from halfv_lab.zoo import calibrated_schedule

    given = {"llava": QWEN_LIKE}
    (tmp_path / "schedule.json").write_text(LLAVA_LIKE.model_dump_json())
    out = with_shipped_schedules(given, ["llava", "internvl"], {"internvl": str(tmp_path)})
    assert out["llava"] is QWEN_LIKE  # --calibrated wins over the shipped file
    assert out["internvl"] == LLAVA_LIKE  # read from the --checkpoint folder
    assert given == {"llava": QWEN_LIKE}  # the argument is not modified
    shipped = with_shipped_schedules({}, ["qwen2_5_vl"], {})
    assert shipped.get("qwen2_5_vl") == calibrated_schedule("qwen2_5_vl")
    assert with_shipped_schedules({}, ["llava"], {"llava": str(tmp_path / "empty")}) == {}


def test_resume_refuses_a_file_written_with_other_answer_settings(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    settings = {"dtype": "float32", "checkpoint": "[]", "seed": "0", "device": "cuda"}
    hb.ResultsStore(path, {"settings": settings}, [_entry("a", "x", "halfv", "0.5", 0.5)]).write()
    for name, value in (("dtype", "bfloat16"), ("checkpoint", "['llava=ckpt']"), ("seed", "1")):
        meta = {"settings": {**settings, name: value}}
        with pytest.raises(ValueError, match=f"written with --{name} .* this run has --{name}"):
            hb.ResultsStore.open(path, meta, resume=True)
        assert hb.ResultsStore.open(path, meta).previous == []  # without --resume: a fresh run
    moved = {"settings": {**settings, "device": "cpu"}}  # same answers up to float noise
    assert len(hb.ResultsStore.open(path, moved, resume=True).previous) == 1


def test_bench_accuracy_alias_is_deprecated_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none"
    from halfv.cli import main

    # the old name runs the same command (here: its error for a missing results file)
    assert main(["bench-accuracy", "--report-only", "--out", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "`halfv bench-accuracy` is deprecated" in err
    assert "use `halfv bench accuracy`" in err
    assert "does not exist" in err
    assert main(["bench", "accuracy", "--report-only", "--out", str(missing)]) == 2
    assert "deprecated" not in capsys.readouterr().err
