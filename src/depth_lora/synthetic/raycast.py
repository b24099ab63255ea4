"""The numpy ray caster shared by both scene generators: boxes and other primitives with
materials, camera rays, hits and normals, and the texture and material maps of what they hit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depth_lora.errors import ConfigError


@dataclass(frozen=True)
class Mat:
    rgb: tuple[float, float, float]  # linear albedo
    pattern: str = "noise"  # see albedo_factor
    period_mm: float = 20.0
    spec: float = 0.0  # specular strength: metal ~1, glossy plastic ~0.5
    shiny: float = 60.0  # Blinn-Phong exponent

@dataclass
class Prim:
    kind: str  # plane (local z = 0, facing +z), box, cyl (axis = local z), sphere
    center: np.ndarray  # (3,) world mm; world z is up, the table top is z = 0
    rot: np.ndarray  # (3, 3) columns = local axes in world
    half: np.ndarray  # box half sizes; cyl (r, r, half length); sphere (r, r, r)
    mat: Mat

def yaw_matrix(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

def box_prim(c, yaw, half, mat) -> Prim:
    return Prim("box", np.asarray(c, float), yaw_matrix(yaw), np.asarray(half, float), mat)

def mat3(m, v) -> np.ndarray:
    """(3, 3) matrix times a (3, ...) float32 field; skips zeros (most rotations are yaw-only)."""
    rows = []
    for i in range(3):
        terms = [v[j] if m[i, j] == 1 else np.float32(m[i, j]) * v[j] for j in range(3) if m[i, j]]
        rows.append(sum(terms[1:], terms[0]) if terms else np.zeros_like(v[0]))
    return np.stack(rows)

def rect(p: Prim, eye, rot, intr, size_hw) -> tuple[slice, slice]:
    """Image rectangle holding the primitive's projection (the whole image if unsure)."""
    h, w = size_hw
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T * p.half
    cam = (p.center + corners @ p.rot.T - eye) @ rot.T
    if p.kind == "plane" or np.any(cam[:, 2] < 1.0):
        return slice(0, h), slice(0, w)
    fx, fy, cx, cy = intr
    u, v = fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy
    u0, u1 = np.clip([np.floor(u.min()) - 1, np.ceil(u.max()) + 2], 0, w).astype(int)
    v0, v1 = np.clip([np.floor(v.min()) - 1, np.ceil(v.max()) + 2], 0, h).astype(int)
    return slice(v0, v1), slice(u0, u1)

def intersect_prim(p: Prim, eye, d) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays eye + t d (d (3, h, w)) with p: t (h, w), inf = miss; local normal."""
    o = (p.rot.T @ (eye - p.center)).astype(np.float32)[:, None, None]  # eye in local frame
    d = mat3(p.rot.T, d)
    d = np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)
    inf, hx, n = np.float32(np.inf), p.half.astype(np.float32), np.zeros_like(d)
    with np.errstate(invalid="ignore", divide="ignore"):
        if p.kind == "plane":
            t = np.where(o[2] * d[2] < 0, -o[2] / d[2], inf)
            n[2] = 1.0
        elif p.kind == "box":  # slab test; the normal is the axis of the last slab entered
            t1, t2 = (-hx[:, None, None] - o) / d, (hx[:, None, None] - o) / d
            tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
            t = np.maximum(np.maximum(tn[0], tn[1]), tn[2])
            t = np.where((t <= np.minimum(np.minimum(tf[0], tf[1]), tf[2])) & (t > 0), t, inf)
            for i in range(3):
                n[i] = np.where(tn[i] == t, -np.sign(d[i]), 0)
        elif p.kind == "sphere":
            a, b, c = (d * d).sum(0), (o * d).sum(0), (o * o).sum() - hx[0] ** 2
            t = (-b - np.sqrt(b * b - a * c)) / a
            t = np.where(t > 0, t, inf)
            n = (o + t * d) / hx[0]
        else:  # cylinder: the side quadric, then the cap facing the eye
            a = d[0] ** 2 + d[1] ** 2
            b, c = o[0] * d[0] + o[1] * d[1], o[0] ** 2 + o[1] ** 2 - hx[0] ** 2
            t = (-b - np.sqrt(b * b - a * c)) / a
            t = np.where((t > 0) & (np.abs(o[2] + t * d[2]) <= hx[2]), t, inf)
            tc = (np.sign(o[2]) * hx[2] - o[2]) / d[2]
            rc = (o[0] + tc * d[0]) ** 2 + (o[1] + tc * d[1]) ** 2
            cap = (np.abs(o[2]) > hx[2]) & (tc > 0) & (rc <= hx[0] ** 2) & (tc < t)
            t = np.where(cap, tc, t)
            n[:2] = np.where(cap, 0, (o[:2] + t * d[:2]) / hx[0])
            n[2] = np.where(cap, np.sign(o[2]), 0)
    return np.nan_to_num(t, nan=np.inf), n

def cast_rays(prims, eye, rot, intr, size_hw, normals=True):
    """Z-buffer render: depth (H, W) mm (inf = nothing), object index (H, W), world normals
    (3, H, W), world rays (3, H, W) with sensor-frame z = 1 (so a hit's t is its depth), rects."""
    fx, fy, cx, cy = intr
    xs = ((np.arange(size_hw[1], dtype=np.float32) - cx) / fx)[None, :]
    ys = ((np.arange(size_hw[0], dtype=np.float32) - cy) / fy)[:, None]
    r = rot.astype(np.float32)  # rows = sensor axes in world
    rays = np.stack([r[0, i] * xs + r[1, i] * ys + r[2, i] for i in range(3)])
    depth = np.full(size_hw, np.inf, np.float32)
    ids = np.full(size_hw, -1, np.int16)
    nrm = np.zeros((3, *size_hw), np.float32) if normals else None
    rects = [rect(p, eye, rot, intr, size_hw) for p in prims]  # culling: most parts are small
    for k, (p, (rv, ru)) in enumerate(zip(prims, rects, strict=True)):
        if rv.stop <= rv.start or ru.stop <= ru.start:
            continue
        t, n = intersect_prim(p, eye, rays[:, rv, ru])
        closer = t < depth[rv, ru]
        np.copyto(depth[rv, ru], t, where=closer)
        np.copyto(ids[rv, ru], k, where=closer)
        if normals:
            with np.errstate(invalid="ignore"):  # misses hold inf normals; they are not copied
                np.copyto(nrm[:, rv, ru], mat3(p.rot, n), where=closer)
    return depth, ids, nrm, rays, rects

def value_noise(lat, u, v) -> np.ndarray:
    """Smooth value noise in [-1, 1], lattice spacing 1 (bilinear on a tiled 256^2 grid)."""
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    k = (i.astype(np.int32) & 255) * 257 + (j.astype(np.int32) & 255)  # lat is 257 x 257
    a = lat.take(k) * (1 - fu) + lat.take(k + 257) * fu
    return a * (1 - fv) + (lat.take(k + 1) * (1 - fu) + lat.take(k + 258) * fu) * fv

def albedo_factor(mat: Mat, u, v, lat) -> np.ndarray:
    """Albedo multiplier at surface coordinates (u, v) in mm: patterns periodic in mm."""
    p = mat.period_mm
    f = 1 + 0.12 * value_noise(lat, u / p, v / p) + 0.05 * value_noise(lat, u / 4 + 91, v / 4)
    if mat.pattern == "brushed":  # streaks along v
        f = 1 + 0.15 * value_noise(lat, u / p, v / (30 * p))
    elif mat.pattern == "rings":  # a turned face with a dark bore
        r = np.hypot(u, v)
        f = np.where(r < 6, 0.05, 0.85 + 0.15 * np.cos(2 * np.pi * r / p))
    elif mat.pattern == "pegboard":  # 20 mm through-holes (black) and light scribed lines
        du, dv = np.mod(u, p) - p / 2, np.mod(v, p) - p / 2
        line = (np.abs(du) > p / 2 - 0.8) | (np.abs(dv) > p / 2 - 0.8)
        f = np.where(du * du + dv * dv < 100, 0.1, f + 2.0 * line)
    elif mat.pattern == "checker":
        f = f * (0.8 + 0.25 * ((np.floor(u / p) + np.floor(v / p)) % 2))
    elif mat.pattern == "wood":  # planks of their own tone, wavy grain along u
        tone = 0.8 + 0.2 * value_noise(lat, 0.5, np.floor(v / 120) * 7.3)
        f = tone * (0.85 + 0.15 * np.sin(2 * np.pi * (v + 8 * value_noise(lat, u / 300, v / 40)) / p))
    elif mat.pattern == "ribs":
        f = f * (0.85 + 0.25 * (np.cos(2 * np.pi * u / p) > 0.8))
    elif mat.pattern == "tape":  # a light 50 mm tape across the carton
        f = np.where(np.abs(v) < p / 2, 1.8, f)
    elif mat.pattern == "tiles":  # 5 mm dark grout between tiles
        f = f * np.where(np.minimum(np.mod(u, p), np.mod(v, p)) < 5, 0.4, 1.0)
    return f.astype(np.float32)

def material_maps(prims, rects, ids, pts, nrm, lat, pattern):
    """Albedo (3, H, W), specular strength and exponent (H, W) of every hit pixel, object by object,
    with the texture `pattern(mat, u, v, lat)` in the object's own face coordinates (mm)."""
    alb = np.zeros_like(pts)
    spec, shiny = np.zeros(ids.shape, np.float32), np.ones(ids.shape, np.float32)
    for k, (p, (rv, ru)) in enumerate(zip(prims, rects, strict=True)):
        m = ids[rv, ru] == k
        if not m.any():
            continue
        pl = mat3(p.rot.T, pts[:, rv, ru][:, m] - p.center.astype(np.float32)[:, None])
        ax = np.abs(mat3(p.rot.T, nrm[:, rv, ru][:, m])).argmax(0)  # face: drop that axis
        u, v = np.where(ax == 0, pl[1], pl[0]), np.where(ax == 2, pl[1], pl[2])
        alb[:, rv, ru][:, m] = np.float32(p.mat.rgb)[:, None] * pattern(p.mat, u, v, lat)
        spec[rv, ru][m], shiny[rv, ru][m] = p.mat.spec, p.mat.shiny
    return alb, spec, shiny

def check_size(size_hw) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size_hw)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be two integers (H, W), got {size_hw!r}") from None
    if h < 64 or w < 64:
        raise ConfigError(f"size must be at least 64x64 pixels, got {h}x{w}")
    return h, w
