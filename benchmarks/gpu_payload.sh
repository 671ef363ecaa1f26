#!/usr/bin/env bash
# Prepares the GPU run of benchmarks/gpu.py for the lent device machine (see README "GPU").
# Everything the run needs that is not tracked in git -- the onnxruntime-gpu wheel (255 MB), the fp16 graph, the
# fine-tuned checkpoint in fp16 and the PyTorch fp32 reference embeddings -- goes into one tar, split into git-ignored
# folders .gpu1, .gpu2, ... each small enough to travel with the working tree (64 MiB a call).
# Needs: the export environment (.venv), build/minilm-l6-stsb (python -m export train) and
# artifacts/minilm-l6-stsb/model.fp16.onnx (python -m export onnx).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
VER=${ORT_GPU_VERSION:-1.31.1}
WHEEL=onnxruntime_gpu-${VER}-cp312-cp312-manylinux_2_28_x86_64.whl
PY=${PYTHON:-.venv/bin/python}
stage=build/gpu-payload
rm -rf "$stage" && mkdir -p "$stage/artifact" "$stage/wheel"
grep -qx '/.gpu*/' .git/info/exclude 2>/dev/null || echo '/.gpu*/' >> .git/info/exclude

[ -f "build/gpu-dl/$WHEEL" ] || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 -d build/gpu-dl "onnxruntime-gpu==$VER"
cp "build/gpu-dl/$WHEEL" "$stage/wheel/"
cp artifacts/minilm-l6-stsb/{manifest.json,tokenizer.json,model.fp16.onnx} "$stage/artifact/"
HF_HUB_OFFLINE=1 "$PY" - "$stage" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from sentence_transformers import SentenceTransformer
from export.data import dev_sentences
stage = Path(sys.argv[1])
model = SentenceTransformer("build/minilm-l6-stsb", device="cpu")
np.save(stage / "dev_fp32.npy", model.encode(dev_sentences(), batch_size=64, convert_to_numpy=True))
model.half().save(str(stage / "checkpoint"))  # fp16 weights: half the bytes to carry; the GPU run uses fp16 anyway
PYEOF
tar -C build -cf build/gpu-payload.tar gpu-payload
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
budget=$(( 62*1024*1024 - ${tree:-0} ))
rm -rf .gpu[0-9]* build/gpu-parts && mkdir -p build/gpu-parts
split -b "$budget" -d -a 2 build/gpu-payload.tar build/gpu-parts/part-
n=0
for p in build/gpu-parts/part-*; do n=$((n+1)); mkdir -p ".gpu$n"; mv "$p" ".gpu$n/"; done
echo "payload $(du -m build/gpu-payload.tar | cut -f1) MiB in $n folders (.gpu1..$n), tree $((tree/1048576)) MiB"
cat <<MSG
Device calls, back to back (carried files stay while the machine is warm, ~30 s):
  for k in 1..$((n-1)):  run(command="true", carry=[".gpu\$k"])
  last:                   run(carry=[".gpu$n"], timeout_s=540, command=
    cat \$(ls .gpu*/part-* | sort -t- -k2) > /tmp/p.tar && tar -C /tmp -xf /tmp/p.tar &&
    python3 -m pip install -q --no-index --no-deps --target /tmp/ortgpu /tmp/gpu-payload/wheel/*.whl &&
    PYTHONPATH=/tmp/ortgpu:\$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu
      --checkpoint /tmp/gpu-payload/checkpoint --artifact /tmp/gpu-payload/artifact
      --reference /tmp/gpu-payload/dev_fp32.npy --out \$OUT 2>&1 | tee \$OUT/log)
  then give_back, and copy gpu.json / gpu.md into benchmarks/results/.
MSG
