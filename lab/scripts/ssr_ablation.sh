#!/usr/bin/env bash
# Where a zoo model loses accuracy: the SSR stage or the IVR selection. Runs
# `halfv bench-accuracy` once with the default schedule and the baselines, then once per
# SSR variant in docs/assets/accuracy/$FAMILY-ssr/*.json (the default's IVR stage; only the
# SSR stage differs), each as method halfv-calibrated. Results land in $OUT/<variant>/
# (results.json, table.md); docs/benchmarks.md quotes them (docs/assets/accuracy/*-ssr/).
#
#   bash lab/scripts/ssr_ablation.sh                # llava on the CPU: bfloat16, 100 + 100, ~20 min
#   FAMILY=internvl VARIANTS="freeze25 none" bash lab/scripts/ssr_ablation.sh
#   DEVICE=cuda DTYPE=float32 LIMIT=300 BATCH=128 BUDGETS=0.5,0.25,0.11,0.05 \
#     bash lab/scripts/ssr_ablation.sh              # GPU: the settings of the full GPU run
# On the lent GPU machine, source lab/scripts/gpu_env.sh first (it stages SmolLM2, see its header).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
FAMILY="${FAMILY:-llava}"
VARIANTS="${VARIANTS:-prune14 freeze24 none}"
OUT="${OUT:-bench-$FAMILY-ssr}"
PYTHON="${PYTHON:-python3}"
common=(--families "$FAMILY" --datasets easyvqa,synthetic --limit "${LIMIT:-100}"
        --budgets "${BUDGETS:-0.5,0.25}" --views budget --device "${DEVICE:-cpu}"
        --dtype "${DTYPE:-bfloat16}" --batch-size "${BATCH:-16}" --seed 0 --no-progress)
"$PYTHON" -m halfv.cli bench-accuracy "${common[@]}" --methods halfv,diversity,random \
  --out "$OUT/shipped"
for variant in $VARIANTS; do
  "$PYTHON" -m halfv.cli bench-accuracy "${common[@]}" --methods halfv-calibrated \
    --calibrated "$FAMILY=docs/assets/accuracy/$FAMILY-ssr/$variant.json" --out "$OUT/$variant"
done
