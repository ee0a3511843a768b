#!/usr/bin/env bash
# The accuracy benchmark of the zoo on the GPU machine, after scripts/gpu_train.sh (same
# machine, still warm): profiles each trained model's TME lifecycle, calibrates a schedule
# from it, and runs `halfv bench-accuracy`; everything comes back in $OUT/accuracy.tar
# (docs/assets/accuracy/ + profile-<family>/ + calib/), plus $OUT/accuracy.log.
#
#   device call: bash scripts/gpu_accuracy.sh          (timeout 600; no carry needed while
#                the machine is warm, else carry the chunks and .whl as for gpu_train.sh)
#
# Checkpoints come from $CKPT_ROOT (default: the stage's ckpt/, where a PARALLEL=1
# CKPT_ROOT=$HALFV_STAGE/ckpt training run left them) and are copied over the shipped ones
# in this copy of the repo first. The benchmark writes results.json after every
# evaluation and is resumed, so a call cut off by its limit continues where it stopped
# when run again. Knobs: LIMIT (300), BUDGETS (0.5,0.25,0.11,0.05), FAMILIES, BATCH (128),
# PROBE_IMAGES per dataset (4).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG=accuracy.log
# shellcheck source=scripts/gpu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"

FAMILIES=${FAMILIES:-llava,internvl,qwen2_5_vl}
CKPT_ROOT=${CKPT_ROOT:-$STAGE/ckpt}
RUN=$STAGE/accuracy
mkdir -p "$RUN/calib" "$RUN/probe"
for fam in ${FAMILIES//,/ }; do
  if [ -d "$CKPT_ROOT/$fam" ]; then
    rm -rf "src/halfv/zoo/checkpoints/$fam" && cp -r "$CKPT_ROOT/$fam" src/halfv/zoo/checkpoints/
    echo "using $CKPT_ROOT/$fam"
  fi
done

# probe images: the first few test images of each dataset, as PNG
python3 - "$RUN/probe" "${PROBE_IMAGES:-4}" <<'PY'
import sys
from halfv.data import load_split
out, n = sys.argv[1], int(sys.argv[2])
for name in ("easyvqa", "synthetic"):
    for i, item in enumerate(load_split(name, "test", limit=n)):
        item.image.save(f"{out}/{name}-{i}.png")
PY

calibrated=()
for fam in ${FAMILIES//,/ }; do
  if [ ! -f "$RUN/calib/$fam.json" ]; then
    halfv_profile=(python3 -m halfv.cli profile --model "$fam" --trained --image-dir "$RUN/probe"
                   --prompt "What is the color of the shape?" --out "$RUN/profile-$fam" --quiet)
    "${halfv_profile[@]}"
    python3 -m halfv.cli calibrate --profile "$RUN/profile-$fam/profile.json" \
      --out "$RUN/calib/$fam.json"
  fi
  calibrated+=(--calibrated "$fam=$RUN/calib/$fam.json")
done

status=0
timeout "${BENCH_SECONDS:-520}" python3 -m halfv.cli bench-accuracy --families "$FAMILIES" --datasets easyvqa,synthetic \
  --limit "${LIMIT:-300}" --budgets "${BUDGETS:-0.5,0.25,0.11,0.05}" \
  --methods halfv,halfv-calibrated,attention,diversity,random,uniform --views budget,flops \
  --batch-size "${BATCH:-128}" --device cuda --seed 0 "${calibrated[@]}" \
  --out "$RUN/acc" --resume --no-progress || status=$?
tar -C "$RUN" --exclude=./probe -cf "$OUT/accuracy.tar" .
echo "accuracy run exit $status; $(date +%T)"
exit "$status"
