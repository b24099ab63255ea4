"""Exports: point clouds (PLY), camera intrinsics from an XYZ map, and merged standalone models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from depth_lora.errors import DataError, DepthLoraError, ModelError


def intrinsics_from_xyz(xyz: np.ndarray, path: str | Path = "XYZ map") -> tuple[float, float, float, float]:
    """Estimate pinhole intrinsics (fx, fy, cx, cy) in pixels from an (H, W, 3) XYZ map in mm.

    A pinhole camera gives u = fx * X / Z + cx and v = fy * Y / Z + cy; both lines are fitted by
    least squares over the valid pixels (a Zivid point map fits to a fraction of a pixel).
    """
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise DataError(path, f"intrinsics need an (H, W, 3) XYZ map, got shape {xyz.shape}")
    h, w = xyz.shape[:2]
    v, u = np.mgrid[0:h, 0:w]
    x, y, z = (xyz[..., i].astype(np.float64) for i in range(3))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & (z > 0)
    if ok.sum() < 100:
        raise DataError(path, "fewer than 100 valid points: cannot estimate intrinsics")
    fx, cx = np.polyfit(x[ok] / z[ok], u[ok], 1)
    fy, cy = np.polyfit(y[ok] / z[ok], v[ok], 1)
    return float(fx), float(fy), float(cx), float(cy)


def depth_to_points(depth_mm: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """Back-project (H, W) depth in mm to (H, W, 3) X, Y, Z in mm with pinhole intrinsics."""
    fx, fy, cx, cy = intrinsics
    h, w = depth_mm.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    z = depth_mm.astype(np.float32)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)


def write_ply(path: str | Path, points_mm: np.ndarray, rgb: np.ndarray | None = None) -> int:
    """Write a binary little-endian PLY of the finite points (x, y, z float32 in mm, colours uint8).

    points_mm: (H, W, 3) or (N, 3); rgb: matching (H, W, 3) or (N, 3) uint8. Returns the count.
    """
    pts = points_mm.reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(int(keep.sum()), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertices[axis] = pts[keep, i]
    if rgb is not None:
        colours = rgb.reshape(-1, 3)[keep]
        for i, name in enumerate(("red", "green", "blue")):
            vertices[name] = colours[:, i]
    header = ["ply", "format binary_little_endian 1.0", "comment depth-lora prediction, units mm",
              f"element vertex {len(vertices)}"]
    header += [f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, t in fields]
    header.append("end_header")
    path = Path(path)
    with path.open("wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vertices.tobytes())
    return len(vertices)


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Fold the LoRA weights into the base model (PEFT merge_and_unload) and save it standalone.

    The result loads with `AutoModelForDepthEstimation.from_pretrained(output_dir)`; its
    depth_lora.json (marked merged) lets `depth-lora predict` use it too.
    """
    from depth_lora.predict import META_FILE, load_bundle

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise DataError(output_dir, "output folder is not empty; choose a new folder for the merged model")
    bundle = load_bundle(adapter_dir, device="cpu")
    if not hasattr(bundle.model, "merge_and_unload"):
        raise ModelError(f"{adapter_dir}: already a merged model")
    try:
        merged = bundle.model.merge_and_unload()
    except (ValueError, RuntimeError, DepthLoraError) as exc:
        raise ModelError(f"{adapter_dir}: cannot merge the adapter ({exc})") from None
    merged.save_pretrained(output_dir)
    meta = {**bundle.meta, "merged": True, "merged_from": str(adapter_dir)}
    split_file = Path(adapter_dir) / meta.get("split_file", "split.json")
    if split_file.is_file():  # so that `evaluate --adapter MERGED` finds the held-out split
        shutil.copy2(split_file, output_dir / split_file.name)
    if meta.get("base_model_dir"):  # a random-init base: keep it for the zero-shot baseline
        shutil.copytree(Path(adapter_dir) / meta["base_model_dir"], output_dir / meta["base_model_dir"])
    (output_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return output_dir
