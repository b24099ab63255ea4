#!/usr/bin/env bash
# The GPU check: what matters on a lent CUDA GPU, in about 4 minutes, with the card's name, written to
# OUT (default: $OUT, the device tool's folder, else /tmp/gpu_check).
#
#     bash benchmarks/gpu_check.sh [--cpu] [OUT]
#
# On the device machine (its python3 already has torch, transformers, peft, OpenCV, SciPy and
# TensorBoard; nothing is installed: the package runs from src/), from the repository root, with the
# device tool's `run` and timeout_s 400. In order of what matters, each step written as it ends:
# 1. the card, the driver and the library versions (gpu.txt);
# 2. stages: a real run of the Small architecture (random init: the same cost) at 518x840 on 58
#    Zivid-size demo captures, auto precision: the device, precision and wall time of each stage
#    (zero-shot calibration, first step, steady steps, evaluations, held-out scoring) from its
#    stages.json (stages.txt); THE CHECK FAILS (exit 1, at the end) if a stage ran its model on
#    the CPU;
# 3. training samples/s of our pipeline at 518x840, batch 8, in bf16 and in fp16 with the gradient
#    scaler (the steps it skipped), peak GPU memory, the loader's share of a step (bench_*.txt/json);
# 4. inference ms per 518x840 image at batch 1, 4, 16, 32 (infer.txt);
# 5. the CUDA paths end to end on a tiny run, fp16: train -> evaluate -> predict -> complete -> export
#    (e2e.txt); catches device bugs (a tensor left on the CPU, a dtype the GPU kernels refuse);
# 6. the training of step 3 again with torch.compile, bf16 and fp16, if time is left (bench_compile_*).
# --cpu runs steps 2, 4 and 5 on the CPU, small and in fp32 (the test suite runs it:
# tests/test_gpu_check.py). Record what it prints, with the card's name, in benchmarks/RESULTS.md.
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
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
started=$SECONDS

if [ "$cpu" = 0 ]; then
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$python" -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| peft', peft.__version__, '| CUDA:', torch.cuda.get_device_name(0))"
    "$python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" \
      2>/dev/null || echo "onnxruntime: not installed (inference timed in PyTorch only)"
    nproc
  } 2>&1 | tee "$out/gpu.txt"
  stage_run=(--model small-random --image-size 518 840 --max-steps 40 --eval-steps 20 --batch-size 8
             --precision auto)
  "${dl[@]}" demo-data "$work/zivid" --count 58 > /dev/null  # 1944x1200, as many as the original project
  expect=cuda
else
  stage_run=(--model demo-pretrained --image-size 70 112 --max-steps 4 --batch-size 2 --precision fp32)
  "${dl[@]}" demo-data "$work/zivid" --count 10 --size 120 194 > /dev/null
  expect=cpu
fi

# 2. Where each stage of a real run ran its model; the failure rule.
{
  limited 150 "${dl[@]}" train --data "$work/zivid" --output "$work/stages" "${stage_run[@]}" \
    | grep -v "^step .* loss " || echo "stages: the run failed or timed out"
  "$python" "$here/benchmarks/stage_report.py" "$work/stages" --expect "$expect" || true
} 2>&1 | tee "$out/stages.txt"
stages_ok=$(grep -c "^stages: every stage ran its model on" "$out/stages.txt" || true)

# 3. Training speed, bf16 and fp16 with the gradient scaler (GPU only).
if [ "$cpu" = 0 ]; then
  "${dl[@]}" demo-data "$work/bench" --count 12 > /dev/null
  for precision in bf16 fp16; do
    limited 100 "${dl[@]}" bench --data "$work/bench" --phases ours --steps 12 --batch-size 8 \
      --precision "$precision" --json "$out/bench_$precision.json" 2>&1 | grep -v "━\|{'train" \
      | tee "$out/bench_$precision.txt" || echo "bench $precision: failed or timed out" \
      | tee -a "$out/bench_$precision.txt"
  done
fi

# 4. Inference ms per image at the trained size.
if [ "$cpu" = 0 ]; then
  limited 60 "$python" "$here/benchmarks/infer_speed.py" 2>&1 | tee "$out/infer.txt" || true
else
  "$python" "$here/benchmarks/infer_speed.py" --model tiny --size 70 112 --batches 1 2 --repeats 2 \
    --precision fp32 2>&1 | tee "$out/infer.txt"
fi

# 5. The CUDA paths end to end (on the CPU with --cpu): each verb once, on a tiny run.
if [ "$cpu" = 0 ]; then
  precision=fp16 size=(126 196) steps=60 model=demo-pretrained
else
  precision=fp32 size=(70 112) steps=4 model=demo-pretrained
fi
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

# 6. torch.compile, with the time that is left (GPU only; the first step compiles for a minute or more).
if [ "$cpu" = 0 ]; then
  for precision in bf16 fp16; do
    left=$((230 - (SECONDS - started)))
    if [ "$left" -lt 60 ]; then
      echo "bench --compile $precision: not run ($left s left of the check's 4 minutes)" \
        | tee "$out/bench_compile_$precision.txt"
      continue
    fi
    limited "$left" "${dl[@]}" bench --data "$work/bench" --phases ours --steps 12 --batch-size 8 --compile \
      --precision "$precision" --json "$out/bench_compile_$precision.json" 2>&1 | grep -v "━\|{'train" \
      | tee "$out/bench_compile_$precision.txt" || echo "bench --compile $precision: failed or timed out" \
      | tee -a "$out/bench_compile_$precision.txt"
  done
fi

echo "gpu_check: $((SECONDS - started)) s"
if [ "$stages_ok" = 0 ]; then
  echo "gpu_check: FAILED: a stage ran its model off the $expect (stages.txt)" >&2
  exit 1
fi
