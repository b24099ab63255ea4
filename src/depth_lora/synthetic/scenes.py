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

import numpy as np

from depth_lora.synthetic.raycast import (
    Mat,
    Prim,
    albedo_factor,
    box_prim,
    cast_rays,
    check_size,
    mat3,
    material_maps,
    yaw_matrix,
)

ZIVID_SIZE_HW = (1200, 1944)
_ZIVID_FX, _ZIVID_CX, _ZIVID_CY = 1780.0, 972.0, 600.0  # Zivid 2 at 1944x1200, pixels
_BASELINE_MM = -135.0  # projector 135 mm along -x of the camera (shadows fall as in real data)
_CONVERGE_MM = 1000.0  # the projector is toed in to cross the optical axis here
_RANGE_MM = (200.0, 4000.0)  # a Zivid 2 returns nothing outside this
_Z_REF_MM = 900.0  # colour exposure: white facing the light reads 1.0 at this work distance
_MIN_SIGNAL = 0.02  # returned light below this never decodes, below twice this only sometimes
_MAX_GLINT = 0.5  # a specular glint above this saturates the projected pattern
_NOISE_K = 4e-7  # depth noise sigma = k Z^2: 0.1 mm at 500 mm, 3.6 mm at 3000 mm
# Camera to crate-top distance (mm): one cell sits at a Zivid 2+'s working distance (the table
# about 1.5 m away, as in the original project's captures: depth mean 1,542 mm, std 295); cells
# of many kinds range from close-up to far (the harder case: `--cells N`).
CELL_WORK_RANGE_MM = (1100.0, 1400.0)
CELLS_WORK_RANGE_MM = (260.0, 2600.0)


def camera_intrinsics(size_hw=ZIVID_SIZE_HW) -> tuple[float, float, float, float]:
    """Zivid-2-like (fx, fy, cx, cy) in pixels, scaled from 1944x1200 to `size_hw` (H, W)."""
    sx, sy = size_hw[1] / ZIVID_SIZE_HW[1], size_hw[0] / ZIVID_SIZE_HW[0]
    return _ZIVID_FX * sx, _ZIVID_FX * sy, _ZIVID_CX * sx, _ZIVID_CY * sy


_LYING = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # local z -> world x
_METAL = Mat((0.55, 0.56, 0.58), "brushed", 3.0, spec=1.2, shiny=90.0)
# Fixed-size parts (mm), so their image size gives the distance: kind, half sizes, lying, material
_PARTS = {
    "pin": ("cyl", (4.0, 4.0, 30.0), True, _METAL),
    "motor": ("cyl", (18.5, 18.5, 30.0), True, _METAL),
    "pulley": ("cyl", (20.0, 20.0, 6.0), False, Mat((0.7, 0.7, 0.72), "rings", 4.0, 0.8, 70.0)),
    "pipe": ("cyl", (25.0, 25.0, 75.0), True, Mat((0.45, 0.45, 0.47), "noise", 15.0, 0.2)),
    "block": ("box", (30.0, 20.0, 15.0), False, None),  # None: a plastic colour per part
    "carton": ("box", (80.0, 55.0, 35.0), False, Mat((0.45, 0.32, 0.18), "tape", 50.0)),
    "ball": ("sphere", (25.0, 25.0, 25.0), False, None),
}
_PLASTIC = [(0.6, 0.08, 0.05), (0.9, 0.45, 0.05), (0.1, 0.45, 0.12), (0.75, 0.7, 0.1)]
_BINS = [  # outer size (L, W, H) mm and colour of the usual grey and blue picking crates
    ((600.0, 400.0, 300.0), (0.28, 0.3, 0.32)),
    ((400.0, 300.0, 220.0), (0.03, 0.12, 0.55)),
    ((300.0, 200.0, 120.0), (0.02, 0.15, 0.7)),
]
_TABLES = [
    Mat((0.07, 0.07, 0.08), "pegboard", 50.0),  # dark perforated plate, 20 mm holes
    Mat((0.5, 0.48, 0.45), "checker", 100.0),  # light worktop, 100 mm tiles
    Mat((0.5, 0.33, 0.18), "wood", 6.0),  # planks 120 mm wide, grain every 6 mm
    Mat((0.06, 0.06, 0.06), "noise", 30.0),  # black rubber mat: little light comes back
]


def _add_bin(prims, center_xy, yaw, size, color) -> None:
    """An open crate: 8 mm floor and four 8 mm walls of glossy ribbed plastic."""
    (L, W, H), th, r = size, 8.0, yaw_matrix(yaw)
    mat = Mat(color, "ribs", 30.0, spec=0.6, shiny=150.0)
    parts = [((0, 0, th / 2), (L / 2, W / 2, th / 2))]
    parts += [((0, s * (W - th) / 2, H / 2), (L / 2, th / 2, H / 2)) for s in (-1, 1)]
    parts += [((s * (L - th) / 2, 0, H / 2), (th / 2, W / 2 - th, H / 2)) for s in (-1, 1)]
    for off, half in parts:
        prims.append(box_prim(np.array([*center_xy, 0.0]) + r @ off, yaw, half, mat))


def _part(name, xyz, yaw, rng) -> Prim:
    kind, half, lying, mat = _PARTS[name]
    mat = mat or Mat(_PLASTIC[rng.integers(len(_PLASTIC))], "noise", 8.0, spec=0.15)
    c = np.asarray(xyz, float) + [0.0, 0.0, half[0] if lying else half[2]]  # rests on xyz
    rot = yaw_matrix(yaw) @ _LYING if lying else yaw_matrix(yaw)
    return Prim(kind, c, rot, np.asarray(half, float), mat)


def _reach(name) -> float:
    """Horizontal radius (mm) a part sweeps when turned about the vertical."""
    kind, (a, b, c), lying, _ = _PARTS[name]
    return float(np.hypot(c, a) if lying else np.hypot(a, b) if kind == "box" else a)


def _fill_bin(prims, rng, center_xy, yaw, size) -> None:
    """Parts of one kind that fit the crate, dropped in it: a part landing on others rests on top."""
    (L, W, H), r = size, yaw_matrix(yaw)
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


def _build_scene(rng, parts_rng, work_range_mm=CELLS_WORK_RANGE_MM, remount_rng=None):
    """(primitives, camera centre (3,) mm, world-to-camera rotation (3, 3), work distance mm,
    light level).

    `rng` draws the cell (table, crates, clutter, camera pose at a distance in `work_range_mm`
    from the crate's top), `parts_rng` the parts in the crates: one cell with new parts is the next
    capture of the same session. `remount_rng` (optional) draws a session's small re-mount of the
    camera (a few cm, a degree or two) and its lighting (light level 0.75-1.25); without it the
    camera sits where the cell puts it and the light level is 1."""
    floor_z = -rng.uniform(700, 900)
    floor = Mat((0.2, 0.2, 0.19), "tiles", 300.0)
    prims = [Prim("plane", np.array([0, 0, floor_z]), np.eye(3), np.zeros(3), floor)]
    table = _TABLES[rng.integers(len(_TABLES))]
    prims.append(box_prim((0, 0, -20), rng.uniform(-0.3, 0.3), (900, 600, 20), table))
    yaw = rng.uniform(-0.4, 0.4) + np.pi / 2 * rng.integers(2)
    big = rng.random() < 0.6  # one large crate, else a row of small ones as in the real sample
    (size, color), n = _BINS[rng.integers(2)] if big else _BINS[2], 1 if big else rng.integers(2, 5)
    target = np.array([*rng.uniform(-150, 150, 2), size[2]])  # the camera looks here
    for k in range(n):
        xy = target[:2] + (yaw_matrix(yaw) @ [(k - (n - 1) / 2) * (size[0] + 10), 0, 0])[:2]
        _add_bin(prims, xy, yaw, size, color)
        _fill_bin(prims, parts_rng, xy, yaw, size)
    keep_out = n * (size[0] + 10) / 2 + 120  # clutter stays clear of the crates
    black = Mat((0.025, 0.025, 0.03), "noise", 10.0)
    for _ in range(rng.integers(2, 8)):
        xy = rng.uniform([-850, -550], [850, 550])
        if np.hypot(*(xy - target[:2])) < keep_out:
            continue
        if rng.random() < 0.35:  # a black tool case: hard to measure, like dark real objects
            prims.append(box_prim((*xy, 60), rng.uniform(0, np.pi), (150, 80, 60), black))
        else:
            prims.append(_part(rng.choice(list(_PARTS)), (*xy, 0), rng.uniform(0, 3), rng))
    if rng.random() < 0.5:  # a cabinet standing on the floor beside the table
        xy = rng.choice([-1, 1], 2) * [rng.uniform(1000, 1600), rng.uniform(0, 900)]
        half = (300, 250, rng.uniform(400, 550))
        cab = Mat((0.55, 0.57, 0.6), "noise", 40.0, spec=0.1)
        prims.append(box_prim((*xy, floor_z + half[2]), rng.uniform(0, 3), half, cab))
    # Camera d mm from the target, mostly looking down; the roll keeps the tilt vertical.
    d = float(np.exp(rng.uniform(*np.log(work_range_mm))))
    tilt, az = np.radians(40.0) * rng.random() ** 1.5, rng.uniform(0, 2 * np.pi)
    light = 1.0
    if remount_rng is not None:  # the same cell, the camera taken down and put back, other lights
        d *= float(np.exp(remount_rng.normal(0, 0.02)))
        tilt = abs(tilt + np.radians(remount_rng.normal(0, 1.0)))
        az += np.radians(remount_rng.normal(0, 1.5))
        target = target + [*remount_rng.normal(0, 15.0, 2), 0.0]
        light = float(remount_rng.uniform(0.75, 1.25))
    eye = target + d * np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])
    z = (target - eye) / d
    x = np.array([-np.sin(az), np.cos(az), 0.0])  # image x: horizontal, across the tilt
    return prims, eye, np.stack([x, np.cross(z, x), z]), d, light


def _lit_by_projector(prims, pts, ndl, eye, rot, intr, size_hw) -> np.ndarray:
    """(H, W) bool: the projector reaches the point (shadow map rendered from the projector)."""
    # The projector sits _BASELINE_MM along the camera x, toed in; half resolution, wider field.
    zp = np.array([-_BASELINE_MM, 0.0, _CONVERGE_MM]) / np.hypot(_BASELINE_MM, _CONVERGE_MM)
    prot = np.stack([np.array([zp[2], 0.0, -zp[0]]), [0.0, 1.0, 0.0], zp]) @ rot
    hp, wp = max(size_hw[0] // 2, 16), max(size_hw[1] // 2, 16)
    f = 0.85 * intr[0] * wp / size_hw[1]
    peye = eye + _BASELINE_MM * rot[0]
    pdepth = cast_rays(prims, peye, prot, (f, f, wp / 2, hp / 2), (hp, wp), normals=False)[0]
    q = mat3(prot, pts - peye.astype(np.float32)[:, None, None])  # (3, H, W) projector frame
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


def render_capture(
    seed: int,
    size_hw=ZIVID_SIZE_HW,
    scene_seed: int | None = None,
    *,
    session_seed: int | None = None,
    work_range_mm=CELLS_WORK_RANGE_MM,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one Zivid-like capture of a random bin-picking cell.

    seed: non-negative int; the same seed gives the same capture. size_hw: (H, W) pixels, each
    >= 64 (the intrinsics scale with it). scene_seed: the cell (table, crates, clutter, camera
    pose, textures); default `seed`. Captures sharing a scene_seed are one session: the same cell
    seen from the same pose, with other parts in the crates and new noise. session_seed: a
    session's re-mount of the camera and its lighting (see `_build_scene`); None: the cell's own.
    work_range_mm: (min, max) distance from the camera to the crate's top, drawn per cell.
    Returns rgb (H, W, 3) uint8 and xyz (H, W, 3) float32
    X, Y, Z in mm in the camera frame (Z forward; X = (u - cx) Z / fx, Y = (v - cy) Z / fy with
    `camera_intrinsics(size_hw)`), NaN in all three channels where the camera returns nothing.
    """
    size_hw = check_size(size_hw)
    rng = np.random.default_rng(seed)
    scene_rng = np.random.default_rng(seed if scene_seed is None else scene_seed)
    remount_rng = None if session_seed is None else np.random.default_rng(session_seed)
    prims, eye, rot, work_mm, light = _build_scene(scene_rng, rng, work_range_mm, remount_rng)
    intr = camera_intrinsics(size_hw)
    depth, ids, nrm, rays, rects = cast_rays(prims, eye, rot, intr, size_hw)
    hit = np.isfinite(depth)
    zhit = np.where(hit, depth, np.float32(0))
    pts = eye.astype(np.float32)[:, None, None] + zhit * rays  # (3, H, W) world mm
    # Albedo and gloss, object by object, with the texture in the object's own frame (mm).
    lat = np.pad(scene_rng.uniform(-1, 1, (256, 256)).astype(np.float32), (0, 1), mode="wrap")
    alb, spec, shiny = material_maps(prims, rects, ids, pts, nrm, lat, albedo_factor)
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
    ambient = np.float32(rng.uniform(0.005, 0.02) * light)
    lin = alb * (irr * exposure * np.float32(light) + ambient) + glint * exposure
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
