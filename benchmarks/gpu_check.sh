#!/usr/bin/env bash
# The GPU check: what matters on a lent CUDA GPU, in under 4 minutes, with the card's name, written to
# OUT (default: $OUT, the device tool's folder, else /tmp/gpu_check).
#
#     bash benchmarks/gpu_check.sh [--cpu] [OUT]
#
# On the device machine (its python3 already has torch, transformers, peft, OpenCV, SciPy and
# TensorBoard; nothing is installed: the package runs from src/), from the repository root, with the
# device tool's `run` and timeout_s 300:
# 1. the card, the driver and the library versions (gpu.txt);
# 2. `depth-lora bench` on the real Small architecture (random init: the same cost) at 518x840,
#    batch 8, bf16 (what `auto` picks on a bf16 GPU) and fp16 with the gradient scaler (the original
#    project's setting): training samples/s ours and the original pipeline's, peak GPU memory,
#    inference per 1944x1200 capture in PyTorch (bench_*.txt, bench_*.json);
# 3. the CUDA paths end to end on a tiny run, fp16: train -> evaluate -> predict -> complete -> export
#    (e2e.txt); catches device bugs (a tensor left on the CPU, a dtype the GPU kernels refuse).
# --cpu runs only step 3, on the CPU in fp32 (the test suite runs it: tests/test_gpu_check.py).
# Record what it prints, with the card's name, in benchmarks/RESULTS.md.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
cpu=0
out=""
for arg in "$@"; do
  case "$arg" in
    --cpu) cpu=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "gpu_check.sh: one output folder only, got $out and $arg" >&2; exit 2; }
       out="$arg" ;;
  esac
done
out="${out:-${OUT:-/tmp/gpu_check}}"
if [ "$cpu" = 0 ] && ! command -v nvidia-smi > /dev/null; then
  echo "gpu_check.sh: no CUDA GPU here (nvidia-smi not found); --cpu runs the CPU-safe part" >&2
  exit 2
fi
mkdir -p "$out"
here="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
dl=("$python" -m depth_lora)  # an array, not a function: `timeout` runs commands only
# On the GPU each step has a time limit; on the CPU none: a busy machine is slow, not broken.
limited() { local seconds=$1; shift; if [ "$cpu" = 1 ]; then "$@"; else timeout "$seconds" "$@"; fi; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$cpu" = 0 ]; then
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$python" -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| peft', peft.__version__, '| CUDA:', torch.cuda.get_device_name(0))"
    "$python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" \
      2>/dev/null || echo "onnxruntime: not installed (inference timed in PyTorch only)"
    nproc
  } 2>&1 | tee "$out/gpu.txt"
  "${dl[@]}" demo-data "$work/bench" --count 8
  for precision in bf16 fp16; do
    timeout 100 "${dl[@]}" bench --data "$work/bench" --steps 10 --batch-size 8 --precision "$precision" \
      --short-sides --json "$out/bench_$precision.json" 2>&1 | grep -v "━" | tee "$out/bench_$precision.txt"
  done
  precision=fp16 size=(126 196) steps=200 model=demo-pretrained
else
  precision=fp32 size=(70 112) steps=4 model=demo-pretrained
fi

# The CUDA paths end to end (on the CPU with --cpu): each verb once, on a tiny run.
{
  "${dl[@]}" demo-data "$work/demo" --count 12 --size 120 194
  limited 120 "${dl[@]}" train --data "$work/demo" --output "$work/run" --model "$model" --image-size "${size[@]}" \
    --max-steps "$steps" --batch-size 4 --precision "$precision" | grep -v "^step .* loss "
  limited 60 "${dl[@]}" evaluate --data "$work/demo" --adapter "$work/run" --precision "$precision" | tail -n 8
  limited 60 "${dl[@]}" predict "$work/demo" --adapter "$work/run" --out "$work/pred" --format npy \
    --precision "$precision"
  limited 60 "${dl[@]}" complete "$work/demo" --adapter "$work/run" --out "$work/done" --format npy \
    --precision "$precision" | tail -n 1
  if "$python" -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
    limited 120 "${dl[@]}" export --adapter "$work/run" --output "$work/onnx" | tail -n 2
  else
    echo "export: skipped (onnx, onnxscript or onnxruntime is not installed)"
  fi
  echo "gpu_check: end to end passed ($precision, $model, ${size[0]}x${size[1]}, $steps steps)"
} 2>&1 | tee "$out/e2e.txt"
