"""The cost model's maths (halfv.ops.cost): FLOPs, predictions, the choice, calibration files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from halfv.errors import ConfigError, HalfvValueError
from halfv.flops.counts import LayerLoad, exact_layer_flops
from halfv.flops.model_specs import ModelDims
from halfv.ops.cost import (
    DEFAULT_CALIBRATION,
    CallShape,
    CostConstants,
    CostDims,
    CostModel,
    Schedule,
    choose,
    layer_flops,
    predict,
    terms,
)

DIMS = CostDims(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, head_dim=128)
FREEZE = Schedule(ivr_layer=3, ssr_layer=15, ssr_mode="freeze")
PRUNE = Schedule(ivr_layer=2, ssr_layer=21, ssr_mode="prune")
GPU = CostConstants(
    device_kind="cuda:X", dtype="bfloat16", overlap=0.05, sec_per_flop=2e-15,
    layer_device_s=5e-5, layer_host_s=6.5e-4, call_host_s=5e-4, prune_host_s=1.5e-3,
    pruned_layer_host_s=3e-5, freeze_host_s=3e-4, frozen_layer_host_s=2.5e-4,
    stage_device_s=1e-4,
)  # fmt: skip


def shape(n: int, batch: int = 1, text: int = 61, ivr: float = 0.5, ssr: float = 0.5) -> CallShape:
    return CallShape(
        batch, n + text, (n,) * batch, (int(n * ivr),) * batch, (int(n * ssr),) * batch
    )


def test_layer_flops_match_the_exact_flops_variant() -> None:
    dims = ModelDims("x", 4096, 11008, 32, 32, 8, 128, 32000)
    ours = CostDims(4096, 11008, 32, 32, 8, 128)
    for q, kv in ((637, 637), (61, 349), (1, 1)):
        load = LayerLoad(query_tokens=q, kv_tokens=kv, frozen_visual=kv - q)
        assert layer_flops(ours, q, kv) == pytest.approx(exact_layer_flops(dims, load))


def test_terms_count_what_each_option_runs() -> None:
    none, ivr, full = (terms(DIMS, shape(576), FREEZE, o) for o in ("none", "ivr", "all"))
    assert none["flops"] > ivr["flops"] > full["flops"]
    assert (none["call"], ivr["call"], full["call"]) == (0, 1, 1)
    assert (ivr["frozen_layers"], full["frozen_layers"]) == (0, 32 - 15)
    assert ivr["pruned_layers"] == 32 - 3 + 1
    pruned = terms(DIMS, shape(576, ssr=0.05), PRUNE, "all")
    assert pruned["prunes"] == 2
    assert pruned["freeze"] == 0
    batch8 = terms(DIMS, shape(576, batch=8), FREEZE, "none")
    assert batch8["flops"] == pytest.approx(8 * none["flops"])


def test_overlap_blends_host_and_device() -> None:
    serial = dataclasses.replace(GPU, overlap=1.0)
    p, s = (
        predict(GPU, DIMS, shape(576), FREEZE, "none"),
        predict(serial, DIMS, shape(576), FREEZE, "none"),
    )
    assert s.total_s == pytest.approx(p.host_s + p.device_s)
    assert p.total_s == pytest.approx(max(p.host_s, p.device_s) + 0.05 * min(p.host_s, p.device_s))


def test_one_small_image_on_a_fast_gpu_is_skipped_and_a_batch_is_not() -> None:
    one = choose(GPU, DIMS, shape(576), FREEZE, 0.05)
    assert not one.run_ivr
    assert not one.run_ssr
    assert one.ivr_gain < 0.05
    batch = choose(GPU, DIMS, shape(576, batch=8), FREEZE, 0.05)
    assert batch.run_ivr
    assert batch.ivr_gain > 0.3
    assert set(batch.predicted_ms) == {"none", "ivr", "all"}


def test_min_gain_zero_runs_every_stage_that_saves_and_the_ssr_share_is_its_own() -> None:
    big = choose(GPU, DIMS, shape(4608, ssr=0.05), PRUNE, 0.0)
    assert big.run_ivr
    assert big.run_ssr
    assert big.ssr_gain is not None
    assert 0 < big.ssr_gain < 1
    # a threshold between the SSR share and the IVR gain keeps IVR alone
    middle = (big.ssr_gain + big.ivr_gain) / 2
    assert big.ssr_gain < middle < big.ivr_gain
    alone = choose(GPU, DIMS, shape(4608, ssr=0.05), PRUNE, middle)
    assert alone.run_ivr
    assert not alone.run_ssr


def test_a_schedule_without_ssr_reports_no_ssr_gain() -> None:
    decision = choose(GPU, DIMS, shape(4608), Schedule(2, None, "none"), 0.05)
    assert decision.run_ivr
    assert not decision.run_ssr
    assert decision.ssr_gain is None


def test_an_inconsistent_shape_is_refused() -> None:
    with pytest.raises(HalfvValueError, match="one visual count per sample"):
        predict(GPU, DIMS, CallShape(2, 100, (10,), (5,), (5,)), FREEZE, "none")


def test_constants_fall_back_from_the_device_name_to_its_type() -> None:
    generic = dataclasses.replace(GPU, device_kind="cuda")
    fp32 = dataclasses.replace(GPU, dtype="float32")
    model = CostModel([GPU, generic, fp32])
    assert model.constants_for("cuda:X", "bfloat16") is GPU
    assert model.constants_for("cuda:Y", "bfloat16") is generic
    assert model.constants_for("cuda:X", "float32") is fp32
    assert model.constants_for("cuda:X", "float16") is GPU  # any dtype, the named kind first
    assert model.constants_for("cuda:Y", "float16") is generic
    assert model.constants_for("mps", "float32") is None


def test_calibration_files_round_trip_and_bad_ones_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"entries": [GPU.to_dict()]}), encoding="utf-8")
    assert CostModel.load(path).entries == (GPU,)
    entry = GPU.to_dict()
    del entry["overlap"]
    path.write_text(json.dumps({"entries": [entry]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="lacks overlap"):
        CostModel.load(path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot be read"):
        CostModel.load(path)
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigError, match="no 'entries'"):
        CostModel.load(path)


def test_the_shipped_calibration_has_a_cpu_and_a_cuda_fallback() -> None:
    model = CostModel.load(DEFAULT_CALIBRATION)
    kinds = {(e.device_kind, e.dtype) for e in model.entries}
    assert ("cpu", "float32") in kinds
    assert any(kind == "cuda" for kind, _ in kinds)
    for entry in model.entries:
        assert entry.source, "every entry says where its numbers come from"
        assert entry.sec_per_flop > 0
        assert entry.layer_host_s > 0
