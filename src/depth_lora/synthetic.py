"""Zivid-like demo captures: bin-picking cells ray-cast in numpy, with metric depth in the image.

Each capture is a pinhole camera with Zivid 2 intrinsics looking down at a table holding a crate
(or a row of small crates) of parts, clutter and a floor. Parts and crates have fixed real sizes,
textures are periodic in millimetres and the projector beside the camera is the light (falloff
1 / distance^2 times n.l), so the RGB image shows how far things are: a model can learn metric
depth from it (FACTS.md). The point map has a structured-light camera's holes: projector shadows
(a shadow map rendered from the projector, 135 mm beside the camera), weak returns (dark albedo,
grazing or far surfaces), saturated glints on metal and glossy plastic, far sides of depth edges,
range limits and isolated dropouts; depth noise grows as Z^2.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from depth_lora.data import DEPTH_SUFFIX, IMAGE_SUFFIX
from depth_lora.errors import ConfigError, DataError
from depth_lora.text import live_progress

ZIVID_SIZE_HW = (1200, 1944)
_ZIVID_FX, _ZIVID_CX, _ZIVID_CY = 1780.0, 972.0, 600.0  # Zivid 2 at 1944x1200, pixels
_BASELINE_MM = -135.0  # projector 135 mm along -x of the camera (shadows fall as in real data)
_CONVERGE_MM = 1000.0  # the projector is toed in to cross the optical axis here
_RANGE_MM = (200.0, 4000.0)  # a Zivid 2 returns nothing outside this
_Z_REF_MM = 900.0  # colour exposure: white facing the light reads 1.0 at this work distance
_MIN_SIGNAL = 0.02  # returned light below this never decodes, below twice this only sometimes
_MAX_GLINT = 0.5  # a specular glint above this saturates the projected pattern
_NOISE_K = 4e-7  # depth noise sigma = k Z^2: 0.1 mm at 500 mm, 3.6 mm at 3000 mm
_STAMP_EPOCH = dt.datetime(2026, 1, 1, 8, 0, 0)


@dataclass(frozen=True)
class _Mat:
    rgb: tuple[float, float, float]  # linear albedo
    pattern: str = "noise"  # see _albedo_factor
    period_mm: float = 20.0
    spec: float = 0.0  # specular strength: metal ~1, glossy plastic ~0.5
    shiny: float = 60.0  # Blinn-Phong exponent


@dataclass
class _Prim:
    kind: str  # plane (local z = 0, facing +z), box, cyl (axis = local z), sphere
    center: np.ndarray  # (3,) world mm; world z is up, the table top is z = 0
    rot: np.ndarray  # (3, 3) columns = local axes in world
    half: np.ndarray  # box half sizes; cyl (r, r, half length); sphere (r, r, r)
    mat: _Mat


def camera_intrinsics(size_hw=ZIVID_SIZE_HW) -> tuple[float, float, float, float]:
    """Zivid-2-like (fx, fy, cx, cy) in pixels, scaled from 1944x1200 to `size_hw` (H, W)."""
    sx, sy = size_hw[1] / ZIVID_SIZE_HW[1], size_hw[0] / ZIVID_SIZE_HW[0]
    return _ZIVID_FX * sx, _ZIVID_FX * sy, _ZIVID_CX * sx, _ZIVID_CY * sy


def _yaw(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_LYING = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # local z -> world x
_METAL = _Mat((0.55, 0.56, 0.58), "brushed", 3.0, spec=1.2, shiny=90.0)
# Fixed-size parts (mm), so their image size gives the distance: kind, half sizes, lying, material
_PARTS = {
    "pin": ("cyl", (4.0, 4.0, 30.0), True, _METAL),
    "motor": ("cyl", (18.5, 18.5, 30.0), True, _METAL),
    "pulley": ("cyl", (20.0, 20.0, 6.0), False, _Mat((0.7, 0.7, 0.72), "rings", 4.0, 0.8, 70.0)),
    "pipe": ("cyl", (25.0, 25.0, 75.0), True, _Mat((0.45, 0.45, 0.47), "noise", 15.0, 0.2)),
    "block": ("box", (30.0, 20.0, 15.0), False, None),  # None: a plastic colour per part
    "carton": ("box", (80.0, 55.0, 35.0), False, _Mat((0.45, 0.32, 0.18), "tape", 50.0)),
    "ball": ("sphere", (25.0, 25.0, 25.0), False, None),
}
_PLASTIC = [(0.6, 0.08, 0.05), (0.9, 0.45, 0.05), (0.1, 0.45, 0.12), (0.75, 0.7, 0.1)]
_BINS = [  # outer size (L, W, H) mm and colour of the usual grey and blue picking crates
    ((600.0, 400.0, 300.0), (0.28, 0.3, 0.32)),
    ((400.0, 300.0, 220.0), (0.03, 0.12, 0.55)),
    ((300.0, 200.0, 120.0), (0.02, 0.15, 0.7)),
]
_TABLES = [
    _Mat((0.07, 0.07, 0.08), "pegboard", 50.0),  # dark perforated plate, 20 mm holes
    _Mat((0.5, 0.48, 0.45), "checker", 100.0),  # light worktop, 100 mm tiles
    _Mat((0.5, 0.33, 0.18), "wood", 6.0),  # planks 120 mm wide, grain every 6 mm
    _Mat((0.06, 0.06, 0.06), "noise", 30.0),  # black rubber mat: little light comes back
]


def _box(c, yaw, half, mat) -> _Prim:
    return _Prim("box", np.asarray(c, float), _yaw(yaw), np.asarray(half, float), mat)


def _add_bin(prims, center_xy, yaw, size, color) -> None:
    """An open crate: 8 mm floor and four 8 mm walls of glossy ribbed plastic."""
    (L, W, H), th, r = size, 8.0, _yaw(yaw)
    mat = _Mat(color, "ribs", 30.0, spec=0.6, shiny=150.0)
    parts = [((0, 0, th / 2), (L / 2, W / 2, th / 2))]
    parts += [((0, s * (W - th) / 2, H / 2), (L / 2, th / 2, H / 2)) for s in (-1, 1)]
    parts += [((s * (L - th) / 2, 0, H / 2), (th / 2, W / 2 - th, H / 2)) for s in (-1, 1)]
    for off, half in parts:
        prims.append(_box(np.array([*center_xy, 0.0]) + r @ off, yaw, half, mat))


def _part(name, xyz, yaw, rng) -> _Prim:
    kind, half, lying, mat = _PARTS[name]
    mat = mat or _Mat(_PLASTIC[rng.integers(len(_PLASTIC))], "noise", 8.0, spec=0.15)
    c = np.asarray(xyz, float) + [0.0, 0.0, half[0] if lying else half[2]]  # rests on xyz
    rot = _yaw(yaw) @ _LYING if lying else _yaw(yaw)
    return _Prim(kind, c, rot, np.asarray(half, float), mat)


def _reach(name) -> float:
    """Horizontal radius (mm) a part sweeps when turned about the vertical."""
    kind, (a, b, c), lying, _ = _PARTS[name]
    return float(np.hypot(c, a) if lying else np.hypot(a, b) if kind == "box" else a)


def _fill_bin(prims, rng, center_xy, yaw, size) -> None:
    """Parts of one kind that fit the crate, dropped in it: a part landing on others rests on top."""
    (L, W, H), r = size, _yaw(yaw)
    names = [n for n in _PARTS if _reach(n) < min(L, W) / 2 - 15]
    name = names[rng.integers(len(names))]
    half, lying = _PARTS[name][1], _PARTS[name][2]
    reach, height = _reach(name), 2 * (half[0] if lying else half[2])
    count = int(rng.integers(3, int(np.clip(1.5 * L * W / (2 * reach) ** 2, 5, 40))))
    tops = []  # (x, y, top z) in the crate frame, mm
    for _ in range(count):
        lx, ly = rng.uniform(-1, 1, 2) * [L / 2 - 8 - reach, W / 2 - 8 - reach]
        z = max([t for x, y, t in tops if np.hypot(x - lx, y - ly) < 1.3 * reach], default=8.0)
        if z + height < H - 10:  # the crate is not overflowing
            tops.append((lx, ly, z + height))
            xy = np.asarray(center_xy) + (r @ [lx, ly, 0.0])[:2]
            prims.append(_part(name, (*xy, z), rng.uniform(0, np.pi), rng))


def _build_scene(rng, parts_rng) -> tuple[list[_Prim], np.ndarray, np.ndarray, float]:
    """Primitives, camera centre (3,) mm, world-to-camera rotation (3, 3), work distance mm.

    `rng` draws the cell (table, crates, clutter, camera pose), `parts_rng` the parts in the
    crates: one cell with new parts is the next capture of the same session."""
    floor_z = -rng.uniform(700, 900)
    floor = _Mat((0.2, 0.2, 0.19), "tiles", 300.0)
    prims = [_Prim("plane", np.array([0, 0, floor_z]), np.eye(3), np.zeros(3), floor)]
    table = _TABLES[rng.integers(len(_TABLES))]
    prims.append(_box((0, 0, -20), rng.uniform(-0.3, 0.3), (900, 600, 20), table))
    yaw = rng.uniform(-0.4, 0.4) + np.pi / 2 * rng.integers(2)
    big = rng.random() < 0.6  # one large crate, else a row of small ones as in the real sample
    (size, color), n = _BINS[rng.integers(2)] if big else _BINS[2], 1 if big else rng.integers(2, 5)
    target = np.array([*rng.uniform(-150, 150, 2), size[2]])  # the camera looks here
    for k in range(n):
        xy = target[:2] + (_yaw(yaw) @ [(k - (n - 1) / 2) * (size[0] + 10), 0, 0])[:2]
        _add_bin(prims, xy, yaw, size, color)
        _fill_bin(prims, parts_rng, xy, yaw, size)
    keep_out = n * (size[0] + 10) / 2 + 120  # clutter stays clear of the crates
    black = _Mat((0.025, 0.025, 0.03), "noise", 10.0)
    for _ in range(rng.integers(2, 8)):
        xy = rng.uniform([-850, -550], [850, 550])
        if np.hypot(*(xy - target[:2])) < keep_out:
            continue
        if rng.random() < 0.35:  # a black tool case: hard to measure, like dark real objects
            prims.append(_box((*xy, 60), rng.uniform(0, np.pi), (150, 80, 60), black))
        else:
            prims.append(_part(rng.choice(list(_PARTS)), (*xy, 0), rng.uniform(0, 3), rng))
    if rng.random() < 0.5:  # a cabinet standing on the floor beside the table
        xy = rng.choice([-1, 1], 2) * [rng.uniform(1000, 1600), rng.uniform(0, 900)]
        half = (300, 250, rng.uniform(400, 550))
        cab = _Mat((0.55, 0.57, 0.6), "noise", 40.0, spec=0.1)
        prims.append(_box((*xy, floor_z + half[2]), rng.uniform(0, 3), half, cab))
    # Camera d mm from the target, mostly looking down; the roll keeps the tilt vertical.
    d = float(np.exp(rng.uniform(np.log(260.0), np.log(2600.0))))
    tilt, az = np.radians(40.0) * rng.random() ** 1.5, rng.uniform(0, 2 * np.pi)
    eye = target + d * np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])
    z = (target - eye) / d
    x = np.array([-np.sin(az), np.cos(az), 0.0])  # image x: horizontal, across the tilt
    return prims, eye, np.stack([x, np.cross(z, x), z]), d


def _mat3(m, v) -> np.ndarray:
    """(3, 3) matrix times a (3, ...) float32 field; skips zeros (most rotations are yaw-only)."""
    rows = []
    for i in range(3):
        terms = [v[j] if m[i, j] == 1 else np.float32(m[i, j]) * v[j] for j in range(3) if m[i, j]]
        rows.append(sum(terms[1:], terms[0]) if terms else np.zeros_like(v[0]))
    return np.stack(rows)


def _rect(p: _Prim, eye, rot, intr, size_hw) -> tuple[slice, slice]:
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


def _intersect(p: _Prim, eye, d) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays eye + t d (d (3, h, w)) with p: t (h, w), inf = miss; local normal."""
    o = (p.rot.T @ (eye - p.center)).astype(np.float32)[:, None, None]  # eye in local frame
    d = _mat3(p.rot.T, d)
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


def _cast(prims, eye, rot, intr, size_hw, normals=True):
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
    rects = [_rect(p, eye, rot, intr, size_hw) for p in prims]  # culling: most parts are small
    for k, (p, (rv, ru)) in enumerate(zip(prims, rects, strict=True)):
        if rv.stop <= rv.start or ru.stop <= ru.start:
            continue
        t, n = _intersect(p, eye, rays[:, rv, ru])
        closer = t < depth[rv, ru]
        np.copyto(depth[rv, ru], t, where=closer)
        np.copyto(ids[rv, ru], k, where=closer)
        if normals:
            with np.errstate(invalid="ignore"):  # misses hold inf normals; they are not copied
                np.copyto(nrm[:, rv, ru], _mat3(p.rot, n), where=closer)
    return depth, ids, nrm, rays, rects


def _noise(lat, u, v) -> np.ndarray:
    """Smooth value noise in [-1, 1], lattice spacing 1 (bilinear on a tiled 256^2 grid)."""
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    k = (i.astype(np.int32) & 255) * 257 + (j.astype(np.int32) & 255)  # lat is 257 x 257
    a = lat.take(k) * (1 - fu) + lat.take(k + 257) * fu
    return a * (1 - fv) + (lat.take(k + 1) * (1 - fu) + lat.take(k + 258) * fu) * fv


def _albedo_factor(mat: _Mat, u, v, lat) -> np.ndarray:
    """Albedo multiplier at surface coordinates (u, v) in mm: patterns periodic in mm."""
    p = mat.period_mm
    f = 1 + 0.12 * _noise(lat, u / p, v / p) + 0.05 * _noise(lat, u / 4 + 91, v / 4)
    if mat.pattern == "brushed":  # streaks along v
        f = 1 + 0.15 * _noise(lat, u / p, v / (30 * p))
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
        tone = 0.8 + 0.2 * _noise(lat, 0.5, np.floor(v / 120) * 7.3)
        f = tone * (0.85 + 0.15 * np.sin(2 * np.pi * (v + 8 * _noise(lat, u / 300, v / 40)) / p))
    elif mat.pattern == "ribs":
        f = f * (0.85 + 0.25 * (np.cos(2 * np.pi * u / p) > 0.8))
    elif mat.pattern == "tape":  # a light 50 mm tape across the carton
        f = np.where(np.abs(v) < p / 2, 1.8, f)
    elif mat.pattern == "tiles":  # 5 mm dark grout between tiles
        f = f * np.where(np.minimum(np.mod(u, p), np.mod(v, p)) < 5, 0.4, 1.0)
    return f.astype(np.float32)


def _materials(prims, rects, ids, pts, nrm, lat, pattern):
    """Albedo (3, H, W), specular strength and exponent (H, W) of every hit pixel, object by object,
    with the texture `pattern(mat, u, v, lat)` in the object's own face coordinates (mm)."""
    alb = np.zeros_like(pts)
    spec, shiny = np.zeros(ids.shape, np.float32), np.ones(ids.shape, np.float32)
    for k, (p, (rv, ru)) in enumerate(zip(prims, rects, strict=True)):
        m = ids[rv, ru] == k
        if not m.any():
            continue
        pl = _mat3(p.rot.T, pts[:, rv, ru][:, m] - p.center.astype(np.float32)[:, None])
        ax = np.abs(_mat3(p.rot.T, nrm[:, rv, ru][:, m])).argmax(0)  # face: drop that axis
        u, v = np.where(ax == 0, pl[1], pl[0]), np.where(ax == 2, pl[1], pl[2])
        alb[:, rv, ru][:, m] = np.float32(p.mat.rgb)[:, None] * pattern(p.mat, u, v, lat)
        spec[rv, ru][m], shiny[rv, ru][m] = p.mat.spec, p.mat.shiny
    return alb, spec, shiny


def _lit_by_projector(prims, pts, ndl, eye, rot, intr, size_hw) -> np.ndarray:
    """(H, W) bool: the projector reaches the point (shadow map rendered from the projector)."""
    # The projector sits _BASELINE_MM along the camera x, toed in; half resolution, wider field.
    zp = np.array([-_BASELINE_MM, 0.0, _CONVERGE_MM]) / np.hypot(_BASELINE_MM, _CONVERGE_MM)
    prot = np.stack([np.array([zp[2], 0.0, -zp[0]]), [0.0, 1.0, 0.0], zp]) @ rot
    hp, wp = max(size_hw[0] // 2, 16), max(size_hw[1] // 2, 16)
    f = 0.85 * intr[0] * wp / size_hw[1]
    peye = eye + _BASELINE_MM * rot[0]
    pdepth = _cast(prims, peye, prot, (f, f, wp / 2, hp / 2), (hp, wp), normals=False)[0]
    q = _mat3(prot, pts - peye.astype(np.float32)[:, None, None])  # (3, H, W) projector frame
    with np.errstate(invalid="ignore", divide="ignore"):
        up, vp = f * q[0] / q[2] + wp / 2, f * q[1] / q[2] + hp / 2
    inside = (up >= 0) & (up < wp - 1) & (vp >= 0) & (vp < hp - 1) & (q[2] > 1)
    k = np.clip(np.nan_to_num(vp), 0, hp - 2).astype(np.int32) * wp
    k += np.clip(np.nan_to_num(up), 0, wp - 2).astype(np.int32)
    # The farthest of the 4 texels around, plus a slope-scaled bias, avoids self-shadowing.
    zmap = np.maximum(
        np.maximum(pdepth.take(k), pdepth.take(k + 1)),
        np.maximum(pdepth.take(k + wp), pdepth.take(k + wp + 1)),
    )
    tan = np.sqrt(1 - np.minimum(ndl, 1) ** 2) / np.maximum(ndl, 0.15)
    return inside & (q[2] <= zmap + 1.0 + 0.002 * q[2] + q[2] / f * tan)


def _check_size(size_hw) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size_hw)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be two integers (H, W), got {size_hw!r}") from None
    if h < 64 or w < 64:
        raise ConfigError(f"size must be at least 64x64 pixels, got {h}x{w}")
    return h, w


def render_capture(
    seed: int, size_hw=ZIVID_SIZE_HW, scene_seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render one Zivid-like capture of a random bin-picking cell.

    seed: non-negative int; the same seed gives the same capture. size_hw: (H, W) pixels, each
    >= 64 (the intrinsics scale with it). scene_seed: the cell (table, crates, clutter, camera
    pose, textures); default `seed`. Captures sharing a scene_seed are one session: the same cell
    seen from the same pose, with other parts in the crates and new noise.
    Returns rgb (H, W, 3) uint8 and xyz (H, W, 3) float32
    X, Y, Z in mm in the camera frame (Z forward; X = (u - cx) Z / fx, Y = (v - cy) Z / fy with
    `camera_intrinsics(size_hw)`), NaN in all three channels where the camera returns nothing.
    """
    size_hw = _check_size(size_hw)
    rng = np.random.default_rng(seed)
    scene_rng = np.random.default_rng(seed if scene_seed is None else scene_seed)
    prims, eye, rot, work_mm = _build_scene(scene_rng, rng)
    intr = camera_intrinsics(size_hw)
    depth, ids, nrm, rays, rects = _cast(prims, eye, rot, intr, size_hw)
    hit = np.isfinite(depth)
    zhit = np.where(hit, depth, np.float32(0))
    pts = eye.astype(np.float32)[:, None, None] + zhit * rays  # (3, H, W) world mm
    # Albedo and gloss, object by object, with the texture in the object's own frame (mm).
    lat = np.pad(scene_rng.uniform(-1, 1, (256, 256)).astype(np.float32), (0, 1), mode="wrap")
    alb, spec, shiny = _materials(prims, rects, ids, pts, nrm, lat, _albedo_factor)
    # The projector is the light (it is for a Zivid colour image too): n.l / distance^2.
    to_l = (eye + _BASELINE_MM * rot[0]).astype(np.float32)[:, None, None] - pts
    dist2 = np.maximum((to_l * to_l).sum(0), np.float32(1))
    to_l /= np.sqrt(dist2)
    ndl = np.clip((nrm * to_l).sum(0), 0, 1)
    lit = _lit_by_projector(prims, pts, ndl, eye, rot, intr, size_hw) & hit
    half = to_l - rays / np.sqrt((rays * rays).sum(0))  # light + view directions
    ndh = np.clip((nrm * half).sum(0) / np.sqrt((half * half).sum(0)), 0, 1)
    # Falloff relative to the work distance, times an exposure that only partly follows it (as a
    # cell's settings do): brightness and returned light still drop as 1 / work_mm.
    falloff = np.where(lit, np.float32(work_mm**2) / dist2, np.float32(0))
    glint = np.power(ndh, shiny, where=spec > 0, out=np.zeros_like(ndh)) * spec * falloff
    irr = ndl * falloff
    exposure = np.float32(_Z_REF_MM / work_mm * rng.uniform(0.9, 1.1))
    lin = alb * (irr * exposure + np.float32(rng.uniform(0.005, 0.02))) + glint * exposure
    img = 255 * np.sqrt(np.minimum(lin, 1))  # gamma 2
    img += rng.standard_normal(img.shape, dtype=np.float32) * (1 + 0.01 * img)  # sensor noise
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
    # Depth: noise ~ Z^2 (more where little light came back), then the camera's holes.
    signal = alb.mean(0) * irr * np.float32(np.sqrt(_Z_REF_MM / work_mm))  # 3D exposure adapts
    sigma = _NOISE_K * zhit**2 * (1 + np.minimum(0.02 / np.maximum(signal, 1e-3), 3))
    z = zhit + rng.standard_normal(size_hw, dtype=np.float32) * sigma
    # Weak returns decode now and then: speckled holes on dark or far surfaces, as in real data.
    valid = lit & (rng.random(size_hw, dtype=np.float32) * _MIN_SIGNAL < signal - _MIN_SIGNAL)
    valid &= (glint < _MAX_GLINT) & (z > _RANGE_MM[0]) & (z < _RANGE_MM[1])
    valid &= rng.random(size_hw, dtype=np.float32) > 0.002  # isolated dropouts
    # The far side of a depth edge holds mixed (flying) pixels, which the camera filters out.
    zp = np.pad(np.where(hit, depth, np.inf), 1, mode="edge")
    near = np.minimum(np.minimum(zp[:-2, 1:-1], zp[2:, 1:-1]), np.minimum(zp[1:-1, :-2], zp[1:-1, 2:]))
    valid &= zhit - near <= 0.02 * near + 3
    z = np.where(valid, z, np.float32(np.nan))
    fx, fy, cx, cy = intr
    xs = (np.arange(size_hw[1], dtype=np.float32) - cx) / fx
    ys = (np.arange(size_hw[0], dtype=np.float32)[:, None] - cy) / fy
    return rgb, np.stack([xs * z, ys * z, z], axis=-1)


DEMO_PREFIX = "demo-"  # every generated capture's name starts so; --overwrite deletes only those


# Demo captures come in sessions, as a cell's captures do: a few captures of one cell and camera
# pose, seconds apart, then the next cell an hour later.
SESSION_SIZES = (2, 5)  # captures per session: 2 to 4
_SECONDS_APART, _SESSION_HOURS = 20, 1


def session_plan(seed: int, count: int) -> list[tuple[int, int]]:
    """(session, index within the session) of each of `count` captures of a run seeded `seed`."""
    rng = np.random.default_rng([seed, 7])
    plan: list[tuple[int, int]] = []
    session = 0
    while len(plan) < count:
        plan += [(session, j) for j in range(int(rng.integers(*SESSION_SIZES)))]
        session += 1
    return plan[:count]


def capture_stamps(seed: int, count: int) -> list[str]:
    """Zivid-like stamps 'demo-YYYY-MM-DD_HH-MM-SS' of a run: a day per seed, sessions an hour
    apart, captures of a session 20 s apart."""
    return [
        DEMO_PREFIX + (_STAMP_EPOCH + dt.timedelta(days=seed % 3650, hours=_SESSION_HOURS * session,
                                                   seconds=_SECONDS_APART * j)).strftime("%Y-%m-%d_%H-%M-%S")
        for session, j in session_plan(seed, count)
    ]


def capture_stamp(seed: int, index: int) -> str:
    """The stamp of capture `index` of a run seeded `seed` (see `capture_stamps`)."""
    return capture_stamps(seed, index + 1)[index]


def _derived_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def write_pair(out_dir: Path, key: str, rgb: np.ndarray, depth: np.ndarray) -> tuple[Path, Path]:
    """Write images/<key>_color.png and depth/<key>_rawDepth.npy; returns both paths."""
    image = out_dir / "images" / f"{key}{IMAGE_SUFFIX}.png"
    depth_file = out_dir / "depth" / f"{key}{DEPTH_SUFFIX}.npy"
    Image.fromarray(rgb).save(image, compress_level=1)  # fast; the size on disk matters less
    np.save(depth_file, depth)
    return image, depth_file


def _write_capture(job) -> tuple[Path, Path]:
    out_dir, stamp, (seed, scene_seed), size_hw = job
    return write_pair(out_dir, f"{stamp}_Zivid_acquisition", *render_capture(seed, size_hw, scene_seed))


def generate_demo_captures(
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    size_hw=ZIVID_SIZE_HW,
    overwrite: bool = False,
    workers: int | None = None,
) -> list[tuple[Path, Path]]:
    """Write `count` Zivid-like captures of random bin-picking cells into `out_dir`.

    Files: `images/<stamp>_Zivid_acquisition_color.png` (8-bit RGB) and
    `depth/<stamp>_Zivid_acquisition_rawDepth.npy` (float32 (H, W, 3) X, Y, Z in mm, NaN =
    invalid), stamps from `capture_stamp(seed, i)`. Captures come in sessions of 2-4 (same cell and
    camera pose, other parts, 20 s apart; sessions an hour apart), as `session_plan` says.
    size_hw: (H, W) pixels, each >= 64. workers: processes (default: all cores).
    A folder already holding captures (images/*.png or depth/*.npy) is refused unless
    `overwrite` and all of them are demo captures (names starting with "demo-"), which are then
    deleted first: a user's own captures are never deleted.
    Returns the (image, depth) paths in capture order. Raises ConfigError for a bad count, seed,
    size or workers, DataError (naming `out_dir`) for a folder that holds captures.
    """
    out_dir, size_hw, old = check_generation_request(out_dir, count, seed, size_hw, workers)
    if old and not overwrite:
        raise DataError(
            out_dir,
            f"already holds {len(old)} capture file(s) in images/ and "
            "depth/; pass overwrite=True (--overwrite) to replace earlier demo captures",
        )
    mine = [p.name for p in old if not p.name.startswith(DEMO_PREFIX)]
    if mine:
        raise DataError(
            out_dir,
            f"holds {len(mine)} file(s) that are not demo captures (e.g. {mine[0]}); "
            "demo captures never replace those: choose another folder",
        )
    for path in old:
        path.unlink()
    plan, stamps = session_plan(seed, count), capture_stamps(seed, count)
    # (capture seed, scene seed): a capture's own parts and noise, its session's cell and pose.
    seeds = [(_derived_seed(seed, session, j, 1), _derived_seed(seed, session)) for session, j in plan]
    jobs = [(out_dir, stamp, pair, size_hw) for stamp, pair in zip(stamps, seeds, strict=True)]
    return run_generation(out_dir, _write_capture, jobs, workers, "demo captures", "capture")


def check_generation_request(
    out_dir: str | Path, count: int, seed: int, size_hw, workers: int | None
) -> tuple[Path, tuple[int, int], list[Path]]:
    """A generator's checked arguments: (out_dir, size_hw, the capture files already in out_dir).

    Raises ConfigError for a bad count, seed, size or workers (None = all cores), DataError if
    out_dir exists and is not a folder.
    """
    size_hw = _check_size(size_hw)
    checks = (("count", count, 1), ("seed", seed, 0), ("workers", 1 if workers is None else workers, 1))
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(out_dir, "exists and is not a folder")
    old = sorted((out_dir / "images").glob("*.png")) + sorted((out_dir / "depth").glob("*.npy"))
    return out_dir, size_hw, old


def run_generation(out_dir: Path, write, jobs: list, workers: int | None, desc: str, unit: str) -> list:
    """`write` over `jobs` (in order) into out_dir/images and out_dir/depth, with a progress bar, in
    `workers` processes (None: all cores)."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    bar = {"total": len(jobs), "desc": desc, "unit": unit, "disable": not live_progress()}
    if workers == 1:
        return [write(job) for job in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(write, jobs), **bar))
