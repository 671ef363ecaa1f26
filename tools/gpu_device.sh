#!/usr/bin/env bash
# The one command to run on the GPU machine, from the root of a checkout of this repository, once the folder that
# `python -m tools.gpu_payload` built is there too (whole, or as its numbered part folders):
#
#     bash tools/gpu_device.sh PAYLOAD RESULTS            # e.g. build/gpu-payload /tmp/results
#     bash tools/gpu_device.sh PAYLOAD RESULTS --smoke    # the same on a machine without a GPU (CI-sized)
#
# Needs python3 (3.12 for the packed onnxruntime-gpu) with torch, sentence-transformers, onnx, safetensors, numpy,
# tokenizers and psutil (matplotlib for the charts). Steps, each under its own time limit inside an overall budget
# (BUDGET_S, default 420 s); a step that fails or runs out of time is logged and the next one still runs:
#   1. unpack    check every part against SHA256SUMS, reassemble, unpack into $GPU_WORK (default /tmp/gpu-run)
#   2. weights   rebuild the checkpoint's fp16 weights from the fp16 graph (tools/graph_weights.py)
#   3. check     GPU, driver, onnxruntime-gpu's providers, a CUDA session without torch in the process
#   4. gpu       python -m benchmarks.gpu: runtime fp16 on CUDAExecutionProvider vs PyTorch fp16  -> RESULTS/gpu/
#   5. cpu       python -m benchmarks --systems runtime-int8,runtime-fp32: int8 (and fp32 if packed) on all cores,
#                with the machine's own onnxruntime (CPU build)                                  -> RESULTS/cpu/
#   6. corpus    OPTIONAL, only if RAY_WHEELS (default build/ray-wheels, from tools/ray_wheels.sh) is here:
#                installs ray[data] from it, then python -m studies.corpus scale (1, 2, 4, 8 actors) -> RESULTS/
# RESULTS/device.log has every step's output. At most 8 files end up under RESULTS.
set -uo pipefail
cd "$(dirname "$0")/.."
payload=${1:?usage: gpu_device.sh PAYLOAD RESULTS [--smoke]}
out=${2:?usage: gpu_device.sh PAYLOAD RESULTS [--smoke]}
smoke=${3:-}
PYTHON=${PYTHON:-python3}
work=${GPU_WORK:-/tmp/gpu-run}
deadline=$((SECONDS + ${BUDGET_S:-420}))
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Absolute, because the SHA256SUMS check below runs from inside the payload folder.
payload=$(cd "$payload" && pwd) || { echo "no payload folder: ${1}"; exit 1; }
log=$out/device.log
export payload work PYTHON
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if [ "$smoke" = --smoke ]; then device=cpu; quick=--quick; else device=cuda; quick=; fi
site=${ORT_SITE:-$work/payload/site}  # ORT_SITE: an onnxruntime-gpu unpacked elsewhere (e.g. for another Python)
art=$work/payload/artifact

step() { # step NAME LIMIT_S FUNCTION: run FUNCTION under the smaller of LIMIT_S and what is left of the budget
  local name=$1 limit=$2 fn=$3 left=$((deadline - SECONDS)) start=$SECONDS rc
  if [ "$left" -lt 15 ]; then
    echo "## step $name: skipped, ${left}s of the budget left" | tee -a "$log"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "## step $name: start $(date -u +%T), limit ${limit}s" | tee -a "$log"
  timeout -k 10 "$limit" bash -c "$fn" >>"$log" 2>&1
  rc=$?
  echo "## step $name: exit $rc after $((SECONDS - start))s$([ $rc = 124 ] && echo ' (time limit)')" | tee -a "$log"
  return $rc
}

unpack() {
  set -euo pipefail
  rm -rf "$work" && mkdir -p "$work"
  for bundle in payload fp32; do
    if [ -f "$payload/$bundle.tar.xz" ]; then
      parts=("$payload/$bundle.tar.xz")
    else
      mapfile -t parts < <(for f in "$payload"/*/"$bundle.tar.xz.part-"*; do
        [ -f "$f" ] && echo "${f##*.part-} $f"; done | sort -n | cut -d' ' -f2-)
      [ "${#parts[@]}" -gt 0 ] || { [ "$bundle" = fp32 ] && continue; echo "no $bundle parts under $payload"; exit 1; }
      sums=$(ls "$payload"/*/"$bundle.tar.xz.SHA256SUMS" | head -1)
      expected=$(wc -l <"$sums")
      [ "${#parts[@]}" = "$expected" ] || { echo "$bundle: ${#parts[@]} of $expected parts here"; exit 1; }
      (cd "$payload" && sha256sum --quiet -c "$sums")
    fi
    echo "$bundle: ${#parts[@]} part(s), $(cat "${parts[@]}" | wc -c) bytes"
    if command -v xz >/dev/null; then
      cat "${parts[@]}" | xz -dc | tar -x -C "$work"
    else
      cat "${parts[@]}" | "$PYTHON" -c 'import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall(sys.argv[1])' "$work"
    fi
  done
  # The int8 graph is tracked in git, so the checkout brings it; the payload's manifest must describe the same file.
  ln -sf "$PWD/artifacts/minilm-l6-stsb/model.int8.onnx" "$art/model.int8.onnx"
  "$PYTHON" - "$work/payload" <<'PY'
import hashlib, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
facts = json.loads((root / "PAYLOAD.json").read_text())
bad = [f for f, h in facts["files"].items() if hashlib.sha256((root / f).read_bytes()).hexdigest() != h]
print("payload files:", len(facts["files"]), "damaged:", bad or "none", "| commit", facts["commit"])
print("onnxruntime-gpu:", json.dumps(facts["onnxruntime_gpu"]))
sys.exit(1 if bad else 0)
PY
}

weights() {
  # The PyTorch baseline's fp16 weights, rebuilt from the fp16 graph and checked bit for bit against the checkpoint.
  local expected
  expected=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["checkpoint"]["weights_digest"])' \
    "$work/payload/PAYLOAD.json")
  PYTHONPATH=$PWD "$PYTHON" -m tools.graph_weights "$art/model.fp16.onnx" \
    "$work/payload/checkpoint.remainder.safetensors" "$work/payload/checkpoint/model.safetensors" --digest "$expected"
}

check() {
  nvidia-smi || echo "nvidia-smi: not available"
  PYTHONPATH=$site:$PWD "$PYTHON" - "$art" <<'PY'
import sys, time
import onnxruntime as ort
from onnxruntime.capi import build_and_package_info as info
print("onnxruntime", ort.__version__, info.package_name, "CUDA", getattr(info, "cuda_version", None), ort.__file__)
print("providers", ort.get_available_providers())
import runtime
print("runtime", runtime.__file__, "| torch imported:", "torch" in sys.modules)
try:
    start = time.perf_counter()
    enc = runtime.load(sys.argv[1], provider="cuda", precision="fp16")
    print(f"CUDA session without torch: {enc._session.get_providers()} in {time.perf_counter() - start:.1f}s")
    print("one text:", enc.encode("A man is playing a guitar.")[:4])
    options = runtime.session.session_options(None)
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    ort.InferenceSession(str(enc.folder / "model.fp16.onnx"), options, providers=["CUDAExecutionProvider"])
    print("every node of the fp16 graph runs on CUDAExecutionProvider (CPU fallback disabled: session created)")
except Exception as err:
    print("CUDA check:", type(err).__name__, err)
PY
}

gpu() {
  set -o pipefail
  PYTHONPATH=$site:$PWD "$PYTHON" -m benchmarks.gpu --checkpoint "$work/payload/checkpoint" --artifact "$art" \
    --reference "$work/payload/dev_fp32.npy" --out "$out/gpu" --device "$device" --worker-timeout 150 $quick
}

cpu() {
  # The runtime's CPU figures with this machine's own onnxruntime (its CPU build), not the GPU package above.
  local artifact=$art
  if ! PYTHONPATH=$PWD "$PYTHON" -c "import runtime, sys; runtime.load(sys.argv[1], provider='cpu', precision='int8')" "$art"; then
    echo "the payload's manifest does not match this checkout's int8 graph: int8 only, from the checkout"
    artifact=$PWD/artifacts/minilm-l6-stsb
  fi
  PYTHONPATH=$PWD "$PYTHON" -m benchmarks --systems runtime-int8,runtime-fp32 --threads "$(nproc)" --artifact "$artifact" \
    --out "$out/cpu" --cache "$work/bench-cache" --rounds "${CPU_ROUNDS:-1}" $quick
}

corpus() {
  # OPTIONAL: Ray Data scaling on this machine's cores, with its own onnxruntime (CPU) and the checkout's int8 graph.
  set -euo pipefail
  "$PYTHON" -m pip install -q --no-index --no-deps --target "$work/ray-site" "$RAY_WHEELS"/*.whl
  PYTHONPATH=$work/ray-site:$PWD "$PYTHON" -m studies.corpus scale --out "$out/corpus" ${CORPUS_ARGS:-}
}

export -f unpack weights check gpu cpu corpus
RAY_WHEELS=${RAY_WHEELS:-$PWD/build/ray-wheels}
export site art out device quick RAY_WHEELS
echo "# gpu_device.sh $(date -u +%FT%TZ) on $(hostname), $(nproc) cores, device=$device, budget ${BUDGET_S:-420}s" | tee "$log"
step unpack "${UNPACK_S:-90}" unpack || { echo "cannot run without the payload; see $log"; tail -20 "$log"; exit 1; }
step weights "${WEIGHTS_S:-60}" weights
step check "${CHECK_S:-60}" check
step gpu "${GPU_S:-300}" gpu
step cpu "${CPU_S:-180}" cpu
if compgen -G "$RAY_WHEELS/ray-*.whl" >/dev/null; then
  step corpus "${CORPUS_S:-120}" corpus
  if [ -d "$out/corpus" ] && [ "$(find "$out/corpus" -type f | wc -l)" -gt 1 ]; then
    tar -C "$out" -czf "$out/corpus.tar.gz" corpus && rm -rf "$out/corpus"
  fi
fi
echo "# results ($(find "$out" -type f | wc -l) files; at most 8 come back):" | tee -a "$log"
find "$out" -type f -printf '%P %s\n' | sort | tee -a "$log"
for f in "$out"/gpu/gpu.md "$out"/cpu/*.md; do [ -f "$f" ] && { echo; cat "$f"; }; done
grep -E "^## step " "$log"
