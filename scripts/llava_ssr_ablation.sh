#!/usr/bin/env bash
# Where the zoo LLaVA loses accuracy: the SSR stage, not the IVR selection. Runs
# `halfv bench-accuracy` once with the shipped schedules and baselines, then once per SSR
# variant in docs/assets/accuracy/llava-ssr/*.json (same IVR: layer 3, halfv policy; only
# the SSR stage differs), each as method halfv-calibrated. Results land in $OUT/<variant>/
# (results.json, table.md); docs/benchmarks.md quotes them (docs/assets/accuracy/llava-ssr/).
#
#   bash scripts/llava_ssr_ablation.sh          # CPU: bfloat16, 100 + 100 questions, ~20 min
#   DEVICE=cuda DTYPE=float32 LIMIT=300 BATCH=128 BUDGETS=0.5,0.25,0.11,0.05 \
#     bash scripts/llava_ssr_ablation.sh        # GPU: the settings of the full GPU run
# On the lent GPU machine, source scripts/gpu_env.sh first (it stages SmolLM2, see its header).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-bench-llava-ssr}"
PYTHON="${PYTHON:-python3}"
common=(--families llava --datasets easyvqa,synthetic --limit "${LIMIT:-100}"
        --budgets "${BUDGETS:-0.5,0.25}" --views budget --device "${DEVICE:-cpu}"
        --dtype "${DTYPE:-bfloat16}" --batch-size "${BATCH:-16}" --seed 0 --no-progress)
"$PYTHON" -m halfv.cli bench-accuracy "${common[@]}" --methods halfv,diversity,random \
  --out "$OUT/shipped"
for variant in prune14 freeze24 none; do
  "$PYTHON" -m halfv.cli bench-accuracy "${common[@]}" --methods halfv-calibrated \
    --calibrated "llava=docs/assets/accuracy/llava-ssr/$variant.json" --out "$OUT/$variant"
done
