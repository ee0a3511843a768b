#!/usr/bin/env bash
# The accuracy benchmark of the zoo on the GPU machine, after lab/scripts/gpu_train.sh (same
# machine, still warm): profiles each trained model's TME lifecycle, calibrates a schedule
# from it, and runs `halfv bench-accuracy`; everything comes back in $OUT/accuracy.tar
# (docs/assets/accuracy/ + profile-<family>/ + calib/), plus $OUT/accuracy.log.
#
#   device call: bash lab/scripts/gpu_accuracy.sh          (timeout 600; no carry needed while
#                the machine is warm, else carry the chunks and .whl as for gpu_train.sh)
#
# Checkpoints come from $CKPT_ROOT (default: the stage's ckpt/, where a PARALLEL=1
# CKPT_ROOT=$HALFV_STAGE/ckpt training run left them) and are copied over the shipped ones
# in this copy of the repo first. The benchmark writes results.json after every
# evaluation and is resumed, so a call cut off by its limit continues where it stopped
# when run again. Knobs: LIMIT (300), BUDGETS (0.5,0.25,0.11,0.05), FAMILIES, BATCH (128),
# PROBE_IMAGES per dataset (4).
#
# SCHEDULES=shipped (default: calibrated) makes `halfv-calibrated` use each checkpoint's
# shipped schedule.json instead of a fresh plain calibration. The families in PROFILE
# (comma-separated, default: none) are then profiled and get a new schedule.json by the
# zoo's rule, fixed before any answer is seen: `halfv calibrate --base-config <base>
# --freeze-below 0.01 --keep-ivr --unsaturated none`, the base being
# halfv_lab.zoo.zoo_base_schedule(family) (docs/models.md, "Shipped schedules"): freeze where
# the KL probe stays below 0.01, no SSR stage when it never does. Resume a cut call with the
# same settings, PROFILE included: each call gets a fresh copy of the tree, so without it
# the resumed rows would use the committed schedule.json files (the profiles are kept and
# not rerun; the calibration is redone in a second).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LOG=accuracy.log
# shellcheck source=lab/scripts/gpu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"

FAMILIES=${FAMILIES:-llava,internvl,qwen2_5_vl}
CKPT_ROOT=${CKPT_ROOT:-$STAGE/ckpt}
RUN=$STAGE/accuracy
mkdir -p "$RUN/calib" "$RUN/probe"
for fam in ${FAMILIES//,/ }; do
  if [ -d "$CKPT_ROOT/$fam" ]; then
    rm -rf "lab/src/halfv_lab/zoo/checkpoints/$fam" && cp -r "$CKPT_ROOT/$fam" lab/src/halfv_lab/zoo/checkpoints/
    echo "using $CKPT_ROOT/$fam"
  fi
done

# probe images: the first few test images of each dataset, as PNG
python3 - "$RUN/probe" "${PROBE_IMAGES:-4}" <<'PY'
import sys
from halfv_lab.data import load_split
out, n = sys.argv[1], int(sys.argv[2])
for name in ("easyvqa", "synthetic"):
    for i, item in enumerate(load_split(name, "test", limit=n)):
        item.image.save(f"{out}/{name}-{i}.png")
PY

profile() {  # profile a trained family once
  [ -f "$RUN/profile-$1/profile.json" ] || python3 -m halfv.cli profile --model "$1" --trained \
    --image-dir "$RUN/probe" --prompt "What is the color of the shape?" \
    --out "$RUN/profile-$1" --quiet
}
calibrated=()
if [ "${SCHEDULES:-calibrated}" = shipped ]; then
  PROFILE=${PROFILE:-}
  for fam in ${PROFILE//,/ }; do
    profile "$fam"
    prof=$RUN/profile-$fam/profile.json
    python3 -c "import sys; from halfv.config import save_config; from halfv_lab.zoo import \
zoo_base_schedule as base; save_config(base(sys.argv[1]), sys.argv[2])" "$fam" "$RUN/calib/base-$fam.json"
    COLUMNS=200 python3 -m halfv.cli calibrate --profile "$prof" --out "$RUN/calib/$fam.json" \
      --base-config "$RUN/calib/base-$fam.json" --freeze-below 0.01 --keep-ivr \
      --unsaturated none > "$RUN/calib/$fam.log"
    cat "$RUN/calib/$fam.log"
    cp "$RUN/calib/$fam.json" "lab/src/halfv_lab/zoo/checkpoints/$fam/schedule.json"
    cp "$RUN/calib/$fam.json" "$CKPT_ROOT/$fam/schedule.json" 2>/dev/null || true
    echo "shipped schedule of $fam: $(cat "$RUN/calib/$fam.json")"
  done
else
  for fam in ${FAMILIES//,/ }; do
    if [ ! -f "$RUN/calib/$fam.json" ]; then
      profile "$fam"
      python3 -m halfv.cli calibrate --profile "$RUN/profile-$fam/profile.json" \
        --out "$RUN/calib/$fam.json"
    fi
    calibrated+=(--calibrated "$fam=$RUN/calib/$fam.json")
  done
fi

status=0
timeout "${BENCH_SECONDS:-520}" python3 -m halfv.cli bench-accuracy --families "$FAMILIES" --datasets easyvqa,synthetic \
  --limit "${LIMIT:-300}" --budgets "${BUDGETS:-0.5,0.25,0.11,0.05}" \
  --methods halfv,halfv-calibrated,attention,diversity,random,uniform --views budget,flops \
  --batch-size "${BATCH:-128}" --device cuda --seed 0 ${calibrated[@]+"${calibrated[@]}"} \
  --out "$RUN/acc" --resume --no-progress || status=$?
tar -C "$RUN" --exclude=./probe -cf "$OUT/accuracy.tar" .
echo "accuracy run exit $status; $(date +%T)"
exit "$status"
