"""Camera geometry in mm: intrinsics from an XYZ point map, back-projection, PLY point clouds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depth_lora.errors import DataError


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


def write_ply(
    path: str | Path,
    points_mm: np.ndarray,
    rgb: np.ndarray | None = None,
    flags: dict[str, np.ndarray] | None = None,
    comment: str = "depth-lora prediction, units mm",
) -> int:
    """Write a binary little-endian PLY of the finite points (x, y, z float32 in mm, colours uint8).

    points_mm: (H, W, 3) or (N, 3); rgb: matching (H, W, 3) or (N, 3) uint8; flags: extra
    per-point uchar properties by name, each (H, W) or (N,) (e.g. ``{"filled": mask}``, which
    CloudCompare and Open3D show as a scalar field). Returns the number of points written.
    """
    pts = points_mm.reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    flags = flags or {}
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += [(name, "u1") for name in flags]
    vertices = np.empty(int(keep.sum()), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertices[axis] = pts[keep, i]
    if rgb is not None:
        colours = rgb.reshape(-1, 3)[keep]
        for i, name in enumerate(("red", "green", "blue")):
            vertices[name] = colours[:, i]
    for name, values in flags.items():
        vertices[name] = np.asarray(values).reshape(-1)[keep]
    from plyfile import PlyData, PlyElement

    element = PlyElement.describe(vertices, "vertex")
    PlyData([element], text=False, byte_order="<", comments=[comment]).write(str(path))
    return len(vertices)
