#!/usr/bin/env bash
# Sourced by lab/scripts/gpu_train.sh and lab/scripts/gpu_accuracy.sh on the GPU machine: stages
# the SmolLM2 GGUF chunks a call carried (.carry/smol.part*), joins them once all have
# arrived (sha256 checked), installs the carried wheels (.whl/) into $HALFV_SITE, exports
# the environment the zoo needs and converts SmolLM2 once. A call that does not complete
# the GGUF exits 0 after staging (send the next chunk within the machine's 30 s warm
# window). Needs LOG set to the log file's name under $OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
BYTES=98362432
STAGE=${HALFV_STAGE:-${HOME:-/root}/halfv-stage}
SITE=${HALFV_SITE:-/tmp/site}
OUT=${OUT:-$PWD/halfv-out}
mkdir -p "$STAGE" "$OUT"
exec > >(tee -a "$OUT/${LOG:-gpu.log}") 2>&1

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
export PYTHONPATH=$SITE:$PWD/src:$PWD/lab/src${PYTHONPATH:+:$PYTHONPATH}
export HALFV_SMOLLM2_GGUF=$GGUF HALFV_CACHE=$STAGE/cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false

python3 - <<'PY'
import time, torch, transformers
from halfv_lab.zoo.smollm2 import ensure_smollm2_cache
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name())
t = time.time()
print("smollm2 cache", ensure_smollm2_cache(), f"({time.time() - t:.0f} s)")
PY

