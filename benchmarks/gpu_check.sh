#!/usr/bin/env bash
# The GPU check: what matters on a lent CUDA GPU, in under 4 minutes, with the card's name, written
# to $OUT (the device tool's folder) or to the folder given as the first argument.
#
# On the device machine (its python3 already has torch, transformers, peft, OpenCV, SciPy,
# TensorBoard; nothing is installed, the package runs from src/), from the repository root:
#     bash benchmarks/gpu_check.sh            # the device tool's `run`, timeout_s 300
#
# 1. the card, the driver and the library versions (gpu.txt);
# 2. `depth-lora bench` on the real Small architecture (random init: the same cost) at 518x840,
#    batch 8: bf16 (what `auto` picks on a bf16 GPU) and fp16, 10 steps each (bench_*.json);
# 3. the CUDA training path end to end: demo-pretrained fine-tuned for 200 steps on 24 generated
#    captures, evaluated on both held-out splits with the verdict (train.txt).
# Prepared, not yet run on a GPU: no session so far was lent one. Record what it prints, with the
# card's name, in benchmarks/RESULTS.md.
set -euo pipefail
out="${1:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
dl() { python3 -m depth_lora "$@"; }
work="$(mktemp -d)"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| peft', peft.__version__, '| CUDA:', torch.cuda.get_device_name(0))"
  nproc
} 2>&1 | tee "$out/gpu.txt"

dl demo-data "$work/bench" --count 8
for precision in bf16 fp16; do
  timeout 100 dl bench --data "$work/bench" --steps 10 --batch-size 8 --precision "$precision" \
    --json "$out/bench_$precision.json" 2>&1 | tee "$out/bench_$precision.txt"
done

dl demo-data "$work/demo" --count 24 --size 240 388
timeout 90 dl train --data "$work/demo" --output "$work/run" --model demo-pretrained --image-size 126 196 \
  --max-steps 200 2>&1 | grep -v "^step .* loss " | tee "$out/train.txt"
timeout 40 dl evaluate --data "$work/demo" --adapter "$work/run" 2>&1 | tail -n 12 | tee -a "$out/train.txt"
