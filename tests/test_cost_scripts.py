"""The cost-model scripts run end to end on the CPU, so they cannot rot.

``benchmarks/calibrate_cost.py --cpu`` measures its six schedules at two small points,
fits the constants and writes a result that ``--merge`` puts into a calibration file the
runtime reads back; ``benchmarks/host_overhead.py`` counts the ops of every schedule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmark_scripts import load_script
from halfv.ops.cost import CostModel


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_calibration_fits_merges_and_loads(tmp_path: Path) -> None:
    script = load_script("calibrate_cost.py")
    out, target = tmp_path / "cost.json", tmp_path / "calibration.json"
    argv = ["--cpu", "--points", "16:1", "96:2", "--repeats", "1", "--warmup", "1"]
    assert script.main([*argv, "--out", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert {row["schedule"] for row in data["rows"]} == set(script.schedules(8))
    assert len(data["rows"]) == 2 * 6
    entry = data["fit"]["entry"]
    assert entry["device_kind"] == "cpu"
    assert entry["overlap"] == 1.0
    assert entry["sec_per_flop"] >= 0
    assert all(row["predicted_ms"] > 0 for row in data["fit"]["fit_check"])
    assert script.main(["--merge", str(out), "--calibration", str(target)]) == 0
    loaded = CostModel.load(target).constants_for("cpu", "float32")
    assert loaded is not None
    assert loaded.layer_host_s == entry["layer_host_s"]


def test_host_overhead_counts_every_schedule(tmp_path: Path) -> None:
    script = load_script("host_overhead.py")
    out = tmp_path / "host.json"
    argv = ["--layers", "22", "--rounds", "1", "--calls", "1", "--warmup", "1"]  # SSR at 21
    assert script.main([*argv, "--out", str(out)]) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert set(rows) == set(script.SCHEDULES)
    assert rows["unpruned"]["ops_over_unpruned"] == 0
    assert rows["freeze"]["aten_ops"] > rows["unpruned"]["aten_ops"]
