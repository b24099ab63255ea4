"""Milliseconds per image of the model's forward at the trained input size, at several batch sizes,
as the public speed figures of Depth Anything are given (the image already on the device and
normalised; PyTorch, channels-last, the run precision's autocast, the head in fp32).

    python benchmarks/infer_speed.py [--model small-random] [--size 518 840] [--precision auto]
                                     [--batches 1 4 16 32] [--repeats 10]

Prints one line per batch size and the best; on CUDA each timing waits for the GPU.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from depth_lora.inference.predict import autocast
from depth_lora.model.checkpoints import build_model
from depth_lora.model.lora import to_channels_last
from depth_lora.model.precision import PRECISIONS, resolve_device, resolve_precision


def time_batch(model, device: torch.device, precision: str, batch: int, size_hw, repeats: int) -> float:
    """Median seconds of one forward of `batch` images (after two warm-up forwards)."""
    x = torch.randn(batch, 3, *size_hw, device=device).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), autocast(device, precision):
        for i in range(repeats + 2):
            start = time.perf_counter()
            model(pixel_values=x).predicted_depth.float()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-random")
    parser.add_argument("--size", type=int, nargs=2, default=[518, 840], metavar=("H", "W"))
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = resolve_device()
    precision = resolve_precision(args.precision, device.type)
    model = to_channels_last(build_model(args.model)[0].to(device)).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"inference {args.model} {args.size[0]}x{args.size[1]} on {device} ({name}), {precision}")
    best = None
    for batch in args.batches:
        try:
            ms = 1000 * time_batch(model, device, precision, batch, tuple(args.size), args.repeats) / batch
        except torch.OutOfMemoryError:
            print(f"batch {batch:>3}: out of memory")
            break
        print(f"batch {batch:>3}: {ms:8.2f} ms per image")
        best = min(best or (ms, batch), (ms, batch))
    if best:
        print(f"best: {best[0]:.2f} ms per image at batch {best[1]}; batch 1: see above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
