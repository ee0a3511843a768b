#!/usr/bin/env bash
# Where the zoo LLaVA loses accuracy: the SSR stage, not the IVR selection (CPU, ~20 min on
# 2 cores). Runs `halfv bench-accuracy` once with the shipped schedules and baselines, then
# once per SSR variant in docs/assets/accuracy/llava-ssr/*.json (same IVR: layer 3, halfv
# policy; only the SSR stage differs), each as method halfv-calibrated. Results land in
# $OUT/<variant>/ (results.json, table.md); docs/benchmarks.md quotes them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-bench-llava-ssr}"
LIMIT="${LIMIT:-100}"
common=(--families llava --datasets easyvqa,synthetic --limit "$LIMIT" --budgets 0.5,0.25
        --views budget --device cpu --dtype bfloat16 --batch-size 16 --seed 0 --no-progress)
halfv bench-accuracy "${common[@]}" --methods halfv,halfv-calibrated,diversity,random \
  --out "$OUT/shipped"
for variant in prune14 freeze24 none; do
  halfv bench-accuracy "${common[@]}" --methods halfv-calibrated \
    --calibrated "llava=docs/assets/accuracy/llava-ssr/$variant.json" --out "$OUT/$variant"
done
