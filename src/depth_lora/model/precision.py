"""Which floating-point precision a forward pass runs in, on this machine (torch imported only
when a precision is resolved, so the command line can name the choices cheaply)."""

from __future__ import annotations

from depth_lora.errors import ConfigError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


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


def resolve_precision(precision: str = "auto", device_type: str | None = None) -> str:
    """Pick fp32 / fp16 / bf16 for a device ("cuda" or "cpu"; default: CUDA if there is one).

    auto: on CUDA, bf16 if the GPU supports it, else fp16; on CPU, bf16 autocast if the CPU has
    native bf16 (AVX-512 BF16 or AMX), else fp32. An explicit choice is kept, except fp16 on CPU,
    which torch does not autocast well: refused.
    """
    import torch

    cuda = (device_type or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision
