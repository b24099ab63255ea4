"""What predict and complete write, and their checks (and evaluate --holes' scoring size): one copy,
torch-free, so the command line runs them before any slow import and the Python API runs the same
ones."""

from __future__ import annotations

from depth_lora.errors import ConfigError

FORMATS = ("npy", "png", "ply")  # depth in mm (.npy), a coloured PNG, a PLY point cloud
# Runtimes of predict and complete (deploy.backends): auto, PyTorch, ONNX Runtime, OpenVINO.
BACKENDS = ("auto", "torch", "onnx", "openvino")
# evaluate --holes scores a larger capture at an integer fraction of its size (evaluation.holes).
HOLE_SCORING_MAX_PIXELS = 600_000


def check_max_pixels(max_pixels: int | None) -> None:
    """ConfigError unless `max_pixels` (evaluate --holes-max-pixels) is None or >= 0 (0: full size)."""
    if max_pixels is not None and max_pixels < 0:
        raise ConfigError(f"--holes-max-pixels must be >= 0 (0: full size), got {max_pixels}")


def check_formats(formats: list[str], has_intrinsics: bool = True) -> None:
    """ConfigError for an unknown format, or a point cloud without intrinsics to make it."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        choices = ", ".join(FORMATS)
        raise ConfigError(f"--format: unknown format(s) {', '.join(unknown)}; choose from {choices}")
    if "ply" in formats and not has_intrinsics:
        raise ConfigError(
            "--format ply: a point cloud needs --intrinsics FX FY CX CY or --intrinsics-from FILE.npy"
        )


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
