"""Tests of halfv.flops, halfv.flops.model_specs, `halfv flops` and scripts/flops_table.py."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from transformers import LlamaConfig, Qwen2_5_VLConfig

from halfv.cli import flops_cmd
from halfv.config import PruningConfig
from halfv.flops import (
    FlopsReport,
    LayerLoad,
    estimate,
    exact_layer_flops,
    field_layer_flops,
    flops_from_token_counts,
    prefill_flops,
    schedule_loads,
)
from halfv.flops.model_specs import MODEL_SPECS, ModelDims, get_model_spec, known_models
from halfv.ops.budget import kept_count

ROOT = Path(__file__).resolve().parents[2]

# d=8, m=16, L=4, 2 query heads and 1 KV head of width 4 (GQA).
TINY = ModelDims("tiny", 8, 16, 4, 2, 1, 4, 10)
TINY_PRUNE = PruningConfig(
    ivr_layer=1,
    ivr_keep=0.5,
    ivr_policy_options={"attention_share": 0.5},
    ssr_layer=3,
    ssr_mode="prune",
    ssr_keep=0.25,
)
VICUNA_7B = get_model_spec("llava-1.5-7b").dims


# --------------------------------------------------------------------------- hand-computed
def test_tiny_prune_schedule_loads() -> None:
    # N=8 visual, T=2 text: IVR keeps floor(8*0.5)=4, SSR keeps floor(8*0.25)=2.
    loads = schedule_loads(4, TINY_PRUNE, 8, 2)
    assert [(x.query_tokens, x.kv_tokens) for x in loads] == [(10, 10), (6, 6), (6, 6), (4, 4)]
    # Relevance before layer 0 over 8 keys; before layer 2 (ssr_layer-1) over the 4 survivors.
    assert [x.relevance_keys for x in loads] == [8, 0, 4, 0]
    # Farthest-point selection before layer 1: K_attn = int(4*0.5) = 2 < 4, so N*K = 32.
    assert [x.selection_pairs for x in loads] == [0, 32, 0, 0]


def test_tiny_field_by_hand() -> None:
    # F(n) = 4*n*8^2 + 2*n^2*8 + 2*n*8*16 = 512n + 16n^2
    f10, f6, f4 = 512 * 10 + 16 * 100, 512 * 6 + 16 * 36, 512 * 4 + 16 * 16
    assert (f10, f6, f4) == (6720, 3648, 2304)
    report = estimate(TINY, TINY_PRUNE, 8, 2)
    assert report.full_field == 4 * f10 == 26880
    assert report.pruned_field == f10 + 2 * f6 + f4 == 16320  # relevance not counted
    assert report.speedup_field == pytest.approx(26880 / 16320)


def test_tiny_exact_by_hand() -> None:
    # Q 2*n*8*8 + K,V 2*2*n*8*4 + O 2*n*8*8 + MLP 2*3*n*8*16 = 1152n
    # attention 2*2*(2*4)*n(n+1)/2 = 16n(n+1)
    def layer(n: int) -> int:
        return 1152 * n + 16 * n * (n + 1)

    assert (layer(10), layer(6), layer(4)) == (13280, 7584, 4928)
    # relevance over r keys: q row 2*8*8 + K proj 2*r*8*4 + dots 2*8*r
    rel8, rel4 = 128 + 2 * 8 * 8 * 4 + 2 * 8 * 8, 128 + 2 * 4 * 8 * 4 + 2 * 8 * 4
    assert (rel8, rel4) == (768, 448)
    selection = 2 * 8 * 32  # 32 cosine evaluations of width 8
    report = estimate(TINY, TINY_PRUNE, 8, 2)
    assert report.full_exact == 4 * 13280 == 53120
    expected = 13280 + rel8 + (7584 + selection) + (7584 + rel4) + 4928
    assert report.pruned_exact == expected == 35104


def test_tiny_freeze_layer_by_hand() -> None:
    config = TINY_PRUNE.model_copy(update={"ssr_mode": "freeze"})
    last = schedule_loads(4, config, 8, 2)[3]
    assert last == LayerLoad(query_tokens=2, kv_tokens=6, frozen_visual=4)
    # field: text rows 4*2*64 + 2*2*8*16, text->all attention 2*2*6*8, visual K/V 2*4*64
    assert field_layer_flops(TINY, last) == 512 + 512 + 192 + 512 == 1728
    # exact: Q 2*2*8*8=256, K/V 2*2*6*8*4=768, pairs 2*6 - 2*1/2 = 11 -> 2*2*8*11=352,
    # O 256, MLP 2*3*2*8*16=1536
    assert last.attended_pairs == 11
    assert exact_layer_flops(TINY, last) == 256 + 768 + 352 + 256 + 1536 == 3168


def test_vicuna_7b_one_layer_by_hand() -> None:
    n, d, m = 576 + 60, 4096, 11008
    load = LayerLoad(n, n)
    field = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    assert field_layer_flops(VICUNA_7B, load) == field == 103_347_781_632
    # 32 heads x 128 = 4096, no GQA: Q 2nd^2, K/V 4nd^2, O 2nd^2, attention 4*d*n(n+1)/2
    exact = 2 * n * d * d + 4 * n * d * d + 4 * d * n * (n + 1) // 2 + 2 * n * d * d
    exact += 6 * n * d * m
    assert exact_layer_flops(VICUNA_7B, load) == exact == 260_740_055_040


def test_causal_pairs_default_and_override() -> None:
    assert LayerLoad(5, 5).attended_pairs == 15  # n(n+1)/2
    assert LayerLoad(2, 6, frozen_visual=4).attended_pairs == 4 * 2 + 1 + 2
    explicit = LayerLoad(2, 6, frozen_visual=4, causal_pairs=7)
    assert exact_layer_flops(TINY, explicit) == 3168 - 2 * 2 * 8 * (11 - 7)


# --------------------------------------------------------------------------- properties
@given(
    st.integers(1, 5000), st.integers(0, 200), st.sampled_from(["llava-1.5-7b", "qwen2.5-vl-7b"])
)
def test_keep_one_without_ssr_is_identity(n: int, text: int, name: str) -> None:
    dims = get_model_spec(name).dims
    config = PruningConfig(ivr_layer=2, ivr_keep=1.0, ssr_mode="none")
    report = estimate(dims, config, n, text)
    assert report.speedup_field == 1.0
    assert report.speedup_exact == 1.0


def _scoring_flops(dims: ModelDims, report: FlopsReport) -> float:
    """Exact FLOPs of the relevance passes and the selection in ``report``'s schedule."""
    bare = [replace(load, relevance_keys=0, selection_pairs=0) for load in report.pruned_loads]
    return report.pruned_exact - prefill_flops(dims, bare, "exact")


@given(
    st.integers(1, 8000),
    st.integers(0, 300),
    st.floats(0.05, 1.0),
    st.floats(0.05, 1.0),
    st.integers(1, 20),
)
@example(n=111, text=0, a=1.0, b=0.9921875, layer=20)  # pruning one token costs more
def test_more_pruning_fewer_flops(n: int, text: int, a: float, b: float, layer: int) -> None:
    dims = get_model_spec("qwen2.5-vl-7b").dims
    lo, hi = min(a, b), max(a, b)
    for mode in ("none", "freeze"):
        less = estimate(
            dims, PruningConfig(ivr_layer=layer, ivr_keep=hi, ssr_layer=21), n, text, mode
        )
        more = estimate(
            dims, PruningConfig(ivr_layer=layer, ivr_keep=lo, ssr_layer=21), n, text, mode
        )
        assert more.pruned_field <= less.pruned_field
        if kept_count(n, hi) < n:  # both pay for a relevance pass and a selection
            assert more.pruned_exact <= less.pruned_exact
        else:  # `less` prunes nothing; a few pruned tokens may save less than scoring costs
            assert more.pruned_exact <= less.pruned_exact + _scoring_flops(dims, more)
        assert more.pruned_field <= more.full_field
    base = PruningConfig(ivr_layer=layer, ivr_keep=hi, ssr_layer=22, ssr_mode="prune", ssr_keep=lo)
    early = base.model_copy(update={"ssr_layer": 21})
    assert estimate(dims, early, n, text).pruned_exact <= estimate(dims, base, n, text).pruned_exact
    later_ivr = base.model_copy(update={"ivr_layer": layer + 1})
    assert (
        estimate(dims, base, n, text).pruned_field
        <= estimate(dims, later_ivr, n, text).pruned_field
    )


@given(st.integers(1, 8000), st.integers(1, 300), st.sampled_from(sorted(MODEL_SPECS)))
def test_freeze_cheaper_than_none(n: int, text: int, name: str) -> None:
    spec = get_model_spec(name)
    config = spec.schedule.model_copy(update={"ssr_mode": "freeze"})
    frozen, none = (
        estimate(spec.dims, config, n, text),
        estimate(spec.dims, config, n, text, "none"),
    )
    assert frozen.pruned_field <= none.pruned_field
    assert frozen.pruned_exact <= none.pruned_exact


@pytest.mark.parametrize(("n", "expected"), [(256, 2.6), (4000, 4.1)])
def test_method_doc_qwen_estimates(n: int, expected: float) -> None:
    spec = get_model_spec("qwen2.5-vl-7b")
    assert spec.schedule.ivr_layer == 2
    assert spec.schedule.ssr_layer == 21
    assert estimate(spec.dims, spec.schedule, n, 60).speedup_field == pytest.approx(
        expected, abs=0.15
    )


def test_method_doc_llava_estimate() -> None:
    spec = get_model_spec("llava-1.5-7b")
    assert estimate(spec.dims, spec.schedule, 576, 60).speedup_field == pytest.approx(2.5, abs=0.15)


# --------------------------------------------------------------------------- schedules
def test_multiple_spans_use_per_span_budgets() -> None:
    config = PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_mode="none", ivr_policy="attention")
    loads = schedule_loads(4, config, [10, 7], 3)
    assert loads[0].kv_tokens == 20
    assert loads[0].relevance_keys == 17
    assert loads[1].query_tokens == 3 + 5 + 3  # floor(3.5) = 3
    assert sum(x.selection_pairs for x in loads) == 0  # attention-only: no diversity pass


@pytest.mark.parametrize(
    ("policy", "relevance", "selection"), [("random", 0, 0), ("diversity", 0, 32)]
)
def test_policy_overheads(policy: str, relevance: int, selection: int) -> None:
    config = TINY_PRUNE.model_copy(
        update={"ivr_policy": policy, "ivr_policy_options": {}, "ssr_mode": "none"}
    )
    loads = schedule_loads(4, config, 8, 2)
    assert sum(x.relevance_keys for x in loads) == relevance
    assert sum(x.selection_pairs for x in loads) == selection


def test_text_only_prompt_is_unpruned() -> None:
    report = estimate(TINY, TINY_PRUNE, 0, 5)
    assert report.speedup_field == report.speedup_exact == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text_tokens": -1}, "text_tokens=-1"),
        ({"visual_tokens": -4}, "visual_tokens=-4"),
        ({"visual_tokens": [5, 0]}, "visual span length=0"),
        ({"visual_tokens": 0, "text_tokens": 0}, "no tokens"),
        ({"num_layers": 3}, "ssr_layer=3 is out of range"),
    ],
)
def test_schedule_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "num_layers": 4,
        "config": TINY_PRUNE,
        "visual_tokens": 8,
        "text_tokens": 2,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        schedule_loads(**args)  # type: ignore[arg-type]


def test_auto_mode_must_be_resolved() -> None:
    config = TINY_PRUNE.model_copy(update={"ssr_mode": "auto"})
    with pytest.raises(ValueError, match="pass ssr_mode='prune', 'freeze' or 'none' explicitly"):
        schedule_loads(4, config, 8, 2)
    assert schedule_loads(4, config, 8, 2, ssr_mode="freeze")[3].frozen_visual == 4


def test_override_needs_ssr_layer_and_valid_keep() -> None:
    no_ssr = PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_mode="none")
    with pytest.raises(ValueError, match=r"needs config\.ssr_layer"):
        schedule_loads(4, no_ssr, 8, 2, ssr_mode="prune")
    loose = PruningConfig(ivr_layer=1, ivr_keep=0.2, ssr_layer=3, ssr_mode="freeze", ssr_keep=0.5)
    with pytest.raises(ValueError, match=r"ssr_keep=0\.5 > ivr_keep=0\.2"):
        schedule_loads(4, loose, 8, 2, ssr_mode="prune")


def test_layer_load_and_variant_validation() -> None:
    with pytest.raises(ValueError, match="kv_tokens=5 must equal query_tokens=2"):
        LayerLoad(2, 5)
    with pytest.raises(ValueError, match="query_tokens=-1"):
        LayerLoad(-1, 1, frozen_visual=2)
    with pytest.raises(ValueError, match="causal_pairs=99 exceeds"):
        LayerLoad(2, 2, causal_pairs=99)
    with pytest.raises(ValueError, match="use 'field' or 'exact'"):
        prefill_flops(TINY, [LayerLoad(1, 1)], "flat")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- runtime counts
def test_flops_from_token_counts_matches_estimate() -> None:
    expected = estimate(TINY, TINY_PRUNE.model_copy(update={"ssr_mode": "freeze"}), 8, 2)
    report = flops_from_token_counts(
        TINY, [10, 6, 6, 2], [10, 6, 6, 6], relevance_keys={0: 8}, selection_pairs={1: 32}
    )
    assert report == expected
    assert report.query_tokens == (10, 6, 6, 2)
    assert [(s.first_layer, s.last_layer, s.frozen_visual) for s in report.stages()] == [
        (0, 0, 0),
        (1, 2, 0),
        (3, 3, 4),
    ]


def test_flops_from_token_counts_errors() -> None:
    with pytest.raises(ValueError, match="one count per decoder layer"):
        flops_from_token_counts(TINY, [10, 6, 6])
    with pytest.raises(ValueError, match="layer 1 has fewer kv tokens"):
        flops_from_token_counts(TINY, [10, 6, 6, 6], [10, 5, 6, 6])
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        flops_from_token_counts(TINY, [10, 6, 6, 6], relevance_keys={9: 3})


# --------------------------------------------------------------------------- model specs
def test_shipped_specs() -> None:
    assert known_models() == (
        "llava-1.5-7b",
        "llava-1.5-13b",
        "llava-next-7b",
        "qwen2.5-vl-7b",
        "internvl3-8b",
    )
    for spec in MODEL_SPECS.values():
        assert spec.dims.num_heads * spec.dims.head_dim == spec.dims.hidden_size
        spec.schedule.check_depth(spec.dims.num_layers)
    next_ = get_model_spec("LLaVA-NeXT-7B").schedule
    assert (
        next_.ivr_layer,
        next_.ivr_policy_options["attention_share"],
        next_.ssr_layer,
        next_.ssr_mode,
    ) == (
        2,
        0.1,
        16,
        "freeze",
    )
    assert get_model_spec("llava-1.5-13b").schedule == get_model_spec("llava-1.5-7b").schedule
    assert get_model_spec("internvl3-8b").schedule == get_model_spec("qwen2.5-vl-7b").schedule
    assert get_model_spec("internvl3-8b").dims.vocab_size == 151674


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown model 'foo'; known: llava-1.5-7b, .*internvl3-8b"
    ):
        get_model_spec("foo")


class _RemoteCodeConfig:
    """InternVL's remote-code config: the LM under `llm_config`, unknown to get_text_config."""

    def __init__(self, llm_config: object) -> None:
        self.llm_config = llm_config
        self.model_type = "internvl_chat"

    def get_text_config(self) -> _RemoteCodeConfig:
        return self  # what PretrainedConfig.get_text_config returns for unknown sub-configs


def test_dims_from_transformers_configs() -> None:
    llama = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        vocab_size=99,
    )
    assert ModelDims.from_config(llama, name="l") == ModelDims("l", 64, 128, 3, 4, 4, 16, 99)
    qwen = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
        }
    )
    dims = ModelDims.from_config(qwen, name="qwen2.5-vl-7b")
    assert dims == get_model_spec("qwen2.5-vl-7b").dims
    # InternVL remote code nests the LM as `llm_config`, which get_text_config() ignores.
    internvl = _RemoteCodeConfig(qwen.text_config)
    assert ModelDims.from_config(internvl).hidden_size == 3584


def test_dims_from_plain_objects() -> None:
    text = SimpleNamespace(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=7,
    )
    dims = ModelDims.from_config(SimpleNamespace(llm_config=text, model_type="internvl_chat"))
    assert (dims.name, dims.num_kv_heads, dims.head_dim) == ("internvl_chat", 4, 8)
    del text.intermediate_size
    with pytest.raises(ValueError, match="has no 'intermediate_size'"):
        ModelDims.from_config(SimpleNamespace(text_config=text))
    with pytest.raises(ValueError, match="num_heads=6 is not a multiple of num_kv_heads=4"):
        ModelDims("x", 48, 64, 2, 6, 4, 8, 7)


# --------------------------------------------------------------------------- CLI
def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="halfv")
    flops_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["flops", *argv])
    result: int = args.func(args)
    return result


def test_cli_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--model", "qwen2.5-vl-7b", "--visual-tokens", "4000") == 0
    out = capsys.readouterr().out
    assert "field (FastV" in out
    assert "exact (GQA" in out
    assert "4.08x" in out
    assert "3.89x" in out
    assert "21-27" in out
    assert "260" in out


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _run(
            "--model", "llava-1.5-7b", "--visual-tokens", "576,576", "--text-tokens", "80", "--json"
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["visual_tokens"] == [576, 576]
    assert data["ssr_mode"] == "freeze"
    assert data["stages"][-1] == {
        "first_layer": 15,
        "last_layer": 31,
        "query_tokens": 80,
        "kv_tokens": 656,
        "frozen_visual": 576,
    }
    expected = estimate(VICUNA_7B, get_model_spec("llava-1.5-7b").schedule, [576, 576], 80)
    assert data["field"]["speedup"] == pytest.approx(expected.speedup_field)
    assert data["exact"]["speedup"] == pytest.approx(expected.speedup_exact)


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--table", "576,4096") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| model | schedule | variant | N=576 | N=4096 |"
    assert len(lines) == 2 + 2 * len(known_models())
    assert (
        "| qwen2.5-vl-7b | IVR @2 keep 0.25, prune @21 keep 0.05 | field | 3.13x | 4.09x |" in lines
    )


def test_cli_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "auto.json"
    path.write_text(
        json.dumps({"ivr_layer": 2, "ivr_keep": 0.5, "ssr_layer": 20, "ssr_mode": "auto"})
    )
    with pytest.raises(ValueError, match="explicitly"):
        _run("--model", "qwen2.5-vl-7b", "--visual-tokens", "100", "--config", str(path))
    _run(
        "--model",
        "qwen2.5-vl-7b",
        "--visual-tokens",
        "100",
        "--config",
        str(path),
        "--ssr-mode",
        "prune",
        "--json",
    )
    data = json.loads(capsys.readouterr().out)
    assert data["ssr_mode"] == "prune"
    assert data["stages"][-1]["query_tokens"] == 60 + 5


def test_cli_local_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4
    ).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="pass --config FILE"):
        _run("--model", str(tmp_path / "ckpt"), "--visual-tokens", "64")
    (tmp_path / "s.json").write_text('{"ivr_layer": 2, "ivr_keep": 0.5}')
    assert (
        _run(
            "--model",
            str(tmp_path / "ckpt"),
            "--visual-tokens",
            "64",
            "--config",
            str(tmp_path / "s.json"),
            "--json",
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["model"] == "ckpt"


@pytest.mark.parametrize(
    ("argv", "error", "match"),
    [
        (("--model", "foo", "--visual-tokens", "3"), ValueError, "unknown model 'foo'; known: "),
        (
            ("--model", "qwen2.5-vl-7b", "--visual-tokens", "-3"),
            ValueError,
            "negative token count -3",
        ),
        (
            ("--model", "qwen2.5-vl-7b", "--visual-tokens", "3", "--text-tokens", "-1"),
            ValueError,
            "-1 is negative",
        ),
        (
            ("--model", "qwen2.5-vl-7b", "--visual-tokens", "a,b"),
            ValueError,
            "not a comma-separated",
        ),
        (("--model", "qwen2.5-vl-7b"), ValueError, "--visual-tokens is required"),
        (("--visual-tokens", "3"), ValueError, "--model is required"),
        (("--table", "576,0"), ValueError, "count of 0"),
        (("--table", "576", "--visual-tokens", "3"), ValueError, "drop --config"),
        (
            ("--model", "qwen2.5-vl-7b", "--visual-tokens", "3", "--config", "/nonexistent.json"),
            FileNotFoundError,
            "does not exist",
        ),
    ],
)
def test_cli_errors(argv: tuple[str, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _run(*argv)


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [('{"ivr_keep": 2.0}', ".json", "ivr_keep"), ("ivr_layer = 2", ".yaml", "use .json or .toml")],
)
def test_cli_bad_config_file(tmp_path: Path, content: str, suffix: str, match: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        _run("--model", "qwen2.5-vl-7b", "--visual-tokens", "3", "--config", str(path))


# --------------------------------------------------------------------------- docs table
def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "flops_table", ROOT / "scripts" / "flops_table.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_table_is_fresh() -> None:
    assert _script().main(["--check"]) == 0, "docs/flops.md is stale: run scripts/flops_table.py"


def test_docs_table_script_standalone() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "flops_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_docs_table_check_detects_and_fixes_stale(tmp_path: Path) -> None:
    script = _script()
    doc = tmp_path / "flops.md"
    doc.write_text(f"intro\n{script.START}\nold table\n{script.END}\noutro\n")
    assert script.main(["--check", "--doc", str(doc)]) == 1
    assert script.main(["--doc", str(doc)]) == 0
    assert script.main(["--check", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")
    assert "N=16384" in text
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="flops-table:start"):
        script.main(["--check", "--doc", str(doc)])


def test_cli_main_reports_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from halfv.cli import main

    assert main(["flops", "--model", "qwen2.5-vl-7b", "--visual-tokens", "576", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["field"]["speedup"] == pytest.approx(3.13, abs=0.005)
    assert main(["flops", "--model", "foo", "--visual-tokens", "3"]) == 2
    assert "halfv: error: unknown model 'foo'; known: llava-1.5-7b" in capsys.readouterr().err


def test_describe_schedule_names_a_non_default_selection() -> None:
    from halfv.cli.flops_cmd import describe_schedule

    base = PruningConfig(ivr_layer=3, ivr_keep=0.5, ssr_mode="none", ssr_layer=None)
    assert describe_schedule(base) == "IVR @3 keep 0.5, no SSR"
    grid = base.model_copy(update={"ivr_policy_options": {"grid_share": 0.7}})
    assert describe_schedule(grid) == "IVR @3 keep 0.5 (grid 0.7), no SSR"
    other = PruningConfig(ivr_layer=2, ivr_keep=0.25, ivr_policy="uniform", ssr_layer=21)
    assert describe_schedule(other).startswith("IVR @2 keep 0.25 (uniform), ")
