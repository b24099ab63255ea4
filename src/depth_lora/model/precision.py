"""Where and in which floating-point precision a forward pass runs, on this machine: decided
here once for every stage of a command (torch imported only when a device or a precision is
resolved, so the command line can name the choices cheaply)."""

from __future__ import annotations

import os

from depth_lora.errors import ConfigError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# /proc/cpuinfo flag -> its usual name: what decides which kernels (fp32, bf16, int8) a runtime can use.
CPU_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
             "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX-BF16",
             "amx_int8": "AMX-INT8"}


def cpu_features() -> dict:
    """This CPU's model name and vector features as /proc/cpuinfo lists them (empty elsewhere, e.g.
    macOS), and the kernels torch picked: what a speed figure measured here holds for."""
    import torch

    name, flags = "", set()
    try:
        for line in open("/proc/cpuinfo").read().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"name": name, "features": [label for flag, label in CPU_FLAGS.items() if flag in flags],
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def describe_cpu(features: dict | None = None) -> str:
    """'AMD EPYC (AVX2, FMA)': the CPU a figure was measured on, in a few words."""
    features = features or cpu_features()
    return f"{features['name'] or 'CPU'} ({', '.join(features['features']) or 'no vector features listed'})"


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where autocast pays, and
    torch is allowed to use it: `ATEN_CPU_CAPABILITY=avx2` caps torch's kernels at AVX2, as on the
    AVX2-only PCs most robot cells have, and then bf16 would only be emulated.

    Not oneDNN's own check (`mkldnn._is_mkldnn_bf16_supported`): it also says yes on AVX-512 CPUs
    that only emulate bf16 (Skylake, Cascade Lake), where bf16 runs slower than fp32.
    """
    import torch

    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(native) and torch.backends.cpu.get_cpu_capability() == "AVX512"
    except (AttributeError, RuntimeError):
        return False


def resolve_device(device=None):
    """The device a command runs its model on, for every stage: `device` if given (a name or a
    torch.device); else this process's CUDA GPU when torch sees one, the LOCAL_RANK-th under
    torchrun or `accelerate launch` (the one the Trainer and accelerate give the process); else
    the CPU. A training run takes the Trainer's own device (TrainingArguments.device), which this
    rule agrees with."""
    import torch

    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_precision(precision: str = "auto", device_type: str | None = None) -> str:
    """Pick fp32 / fp16 / bf16 for a device type ("cuda" or "cpu"; default: `resolve_device()`'s).

    auto: on CUDA, bf16 if the GPU supports it, else fp16; on CPU, bf16 autocast if the CPU has
    native bf16 (AVX-512 BF16 or AMX), else fp32. An explicit choice is kept, except fp16 on CPU,
    which torch does not autocast well: refused.
    """
    import torch

    cuda = (device_type or resolve_device().type) == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision
