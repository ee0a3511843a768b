"""Each checkpoint's shipped schedule is what ``halfv calibrate`` derives from its profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from halfv import cli
from halfv.config import load_config

PROFILES = Path(__file__).resolve().parents[2] / "docs" / "assets" / "profiles"


@pytest.mark.parametrize("family", ["llava", "internvl", "qwen2_5_vl"])
def test_shipped_zoo_schedules_are_reproduced_by_calibrate(family: str, tmp_path: Path) -> None:
    # every checkpoint ships the zoo's rule (docs/models.md, "Shipped schedules"): the zoo
    # base (adapter default + grid seeds), freeze where the KL probe stays below 0.01, no
    # SSR stage when it never does (the LLaVA's visual updates matter at every layer)
    from halfv.config import save_config
    from halfv_lab.zoo import ZOO_GRID_SHARE, calibrated_schedule, zoo_base_schedule

    base, out = tmp_path / "base.json", tmp_path / "schedule.json"
    save_config(zoo_base_schedule(family), base)
    profile = str(PROFILES / f"trained-{family}.json")
    flags = ["--base-config", str(base), "--freeze-below", "0.01", "--keep-ivr"]
    flags += ["--unsaturated", "none"]
    assert cli.main(["calibrate", "--profile", profile, "--out", str(out), *flags]) == 0
    config = load_config(out)
    assert config == calibrated_schedule(family)
    expected = {"llava": ("none", None), "internvl": ("freeze", 24), "qwen2_5_vl": ("freeze", 27)}
    assert (config.ssr_mode, config.ssr_layer) == expected[family]
    # attention_share (the adapter default) sits beside grid_share since the hygiene merge
    assert config.ivr_policy_options["grid_share"] == ZOO_GRID_SHARE
