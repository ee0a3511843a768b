#!/usr/bin/env bash
# Where the zoo's HalfV loses to random pruning: the IVR selection or the SSR stage, and
# whether grid seeds (`grid_share`, docs/policies.md) close the gap. For every family it
# writes one schedule per variant, derived from the shipped schedule.json (only the named
# fields change), and runs `halfv bench-accuracy` once per variant with the variant as
# method halfv-calibrated (budget view). Results land in $OUT/ivr-ablation/<variant>/
# (results.json, table.md); compare them with the baselines of the full run (same
# checkpoints, questions and seed).
#
#   bash lab/scripts/ivr_ablation.sh                     # CPU: bfloat16, 100 + 100 questions
#   DEVICE=cuda DTYPE=float32 LIMIT=300 BATCH=128 bash lab/scripts/ivr_ablation.sh   # GPU
# On the lent GPU machine, source lab/scripts/gpu_env.sh first (it stages SmolLM2).
# Variants: shipped (the shipped schedule with grid_share 0), grid50, grid70 (with 0.5 /
# 0.7), ivr (its IVR stage only, grid_share 0), ivr-grid70, default-grid70 (the adapter's
# default schedule for the model's depth with grid_share 0.7: halfv_lab.zoo.zoo_base_schedule).
# VARIANTS picks some; a finished variant is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python3}"
FAMILIES="${FAMILIES:-llava,internvl,qwen2_5_vl}"
VARIANTS="${VARIANTS:-shipped grid70 ivr ivr-grid70 default-grid70 grid50}"
OUT="${OUT:-halfv-out}/ivr-ablation"
mkdir -p "$OUT/schedules"
"$PYTHON" - "$OUT/schedules" "$FAMILIES" <<'PY'
import json, sys
from pathlib import Path
from halfv_lab.zoo import checkpoint_path, zoo_base_schedule
out, families = Path(sys.argv[1]), sys.argv[2].split(",")
for family in families:
    shipped = json.loads((checkpoint_path(family) / "schedule.json").read_text())
    no_grid, grid = {"ivr_policy_options": {}}, lambda share: {"ivr_policy_options": {"grid_share": share}}
    no_ssr = {"ssr_mode": "none", "ssr_layer": None}
    variants = {
        "shipped": {**shipped, **no_grid},
        "grid50": {**shipped, **grid(0.5)},
        "grid70": {**shipped, **grid(0.7)},
        "ivr": {**shipped, **no_ssr, **no_grid},
        "ivr-grid70": {**shipped, **no_ssr, **grid(0.7)},
        "default-grid70": zoo_base_schedule(family).model_dump(mode="json"),
    }
    for name, schedule in variants.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / f"{family}.json").write_text(json.dumps(schedule, indent=2))
        print(f"{name:15s} {family:11s} {json.dumps(schedule, sort_keys=True)}")
PY
for variant in $VARIANTS; do
  [ -f "$OUT/$variant/table.md" ] && continue
  calibrated=()
  for fam in ${FAMILIES//,/ }; do
    calibrated+=(--calibrated "$fam=$OUT/schedules/$variant/$fam.json")
  done
  "$PYTHON" -m halfv.cli bench-accuracy --families "$FAMILIES" --datasets easyvqa,synthetic \
    --limit "${LIMIT:-100}" --budgets "${BUDGETS:-0.5,0.25,0.11}" --views budget \
    --methods halfv-calibrated --device "${DEVICE:-cpu}" --dtype "${DTYPE:-bfloat16}" \
    --batch-size "${BATCH:-16}" --seed 0 --no-progress "${calibrated[@]}" \
    --out "$OUT/$variant" --resume
done
