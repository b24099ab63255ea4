"""Source-domain scenes for the pretrain-then-adapt experiment: rooms and tabletops, ray-cast in numpy.

They differ from the Zivid-like bin-picking target (`depth_lora.synthetic.scenes`) in content (a floor,
walls, furniture and household objects), camera (handheld-like, looking about horizontally,
60-75 degree horizontal field of view, 4:3) and depth range (about 0.5-10 m). Depth still shows in
the image (FACTS.md): furniture and objects have fixed real sizes, textures are periodic in mm and
a flash at the camera lights the scene with 1 / distance^2 falloff, plus some ambient light. The
"sensor" is clean, like the dense pseudo-labels Depth Anything trains on: depth is NaN only where
a ray hits nothing (sky above a roofless room) or lies beyond 12 m.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depth_lora.errors import DataError
from depth_lora.synthetic.demo import check_generation_request, run_generation, write_pair
from depth_lora.synthetic.raycast import (
    Mat,
    Prim,
    albedo_factor,
    box_prim,
    cast_rays,
    check_size,
    intersect_prim,
    material_maps,
    value_noise,
    yaw_matrix,
)

SOURCE_PREFIX = "source-"  # every generated scene's file name starts so
SOURCE_SIZE_HW = (240, 320)
_MAX_DEPTH_MM = 12000.0  # farther hits count as nothing, like the far end of a depth label
_HFOV_DEG = (60.0, 75.0)
_SS = 2  # supersampling per axis: colour is averaged over 2x2 rays, so world-unit textures don't alias
_CLEARANCE_MM = 500.0  # the camera keeps this far from every box, so no depth falls below ~350 mm

_WOOD = [(0.45, 0.3, 0.17), (0.6, 0.45, 0.28), (0.25, 0.15, 0.08)]
_PAINT = [(0.75, 0.72, 0.65), (0.55, 0.65, 0.72), (0.8, 0.74, 0.55), (0.62, 0.7, 0.58), (0.8, 0.8, 0.78)]
_HOUSE = [(0.7, 0.15, 0.12), (0.12, 0.3, 0.65), (0.85, 0.65, 0.1), (0.15, 0.5, 0.35), (0.85, 0.85, 0.82)]
_FLOORS = [
    Mat(_WOOD[0], "wood", 8.0),  # oak planks 120 mm wide
    Mat((0.62, 0.6, 0.56), "tiles", 400.0),  # 400 mm ceramic tiles, 5 mm grout
    Mat((0.55, 0.55, 0.52), "checker", 300.0),
    Mat((0.3, 0.25, 0.33), "noise", 12.0),  # carpet
    Mat((0.42, 0.42, 0.4), "noise", 250.0),  # concrete
]
# Household objects of fixed real size (mm), upright: kind, half sizes (cyl: r, r, half height),
# material (None: a colour from _HOUSE per object, slightly glossy).
_OBJECTS = {
    "mug": ("cyl", (40.0, 40.0, 48.0), None),
    "can": ("cyl", (33.0, 33.0, 61.0), Mat((0.6, 0.6, 0.62), "brushed", 3.0, spec=1.0, shiny=80.0)),
    "bottle": ("cyl", (38.0, 38.0, 140.0), Mat((0.08, 0.3, 0.12), "noise", 20.0, spec=0.8, shiny=120.0)),
    "vase": ("cyl", (60.0, 60.0, 125.0), None),
    "ball": ("sphere", (110.0, 110.0, 110.0), Mat((0.8, 0.8, 0.78), "checker", 70.0)),
    "orange": ("sphere", (38.0, 38.0, 38.0), Mat((0.8, 0.35, 0.03), "noise", 3.0, spec=0.2)),
    "book": ("box", (117.0, 78.0, 15.0), None),
    "shoebox": ("box", (165.0, 100.0, 60.0), Mat((0.7, 0.65, 0.6), "noise", 40.0)),
    "cereal": ("box", (95.0, 35.0, 140.0), None),
}
# Furniture against a wall: outer length along the wall, depth, height (mm).
_AGAINST_WALL = {"sideboard": (1600.0, 450.0, 800.0), "cabinet": (800.0, 600.0, 900.0),
                 "wardrobe": (1000.0, 600.0, 2000.0), "bookcase": (800.0, 300.0, 1800.0),
                 "sofa": (2000.0, 900.0, 850.0)}
_TABLES = [(1600.0, 900.0, 750.0), (1200.0, 800.0, 740.0), (1000.0, 600.0, 420.0)]  # L, W, top height


def _pattern(mat: Mat, u, v, lat) -> np.ndarray:
    """Albedo multiplier at face coordinates (u, v) in mm: the target's patterns plus wall ones."""
    p = mat.period_mm
    if mat.pattern == "stripes":  # wallpaper: vertical stripes of two tones
        f = 0.8 + 0.25 * (np.mod(u, p) < p / 3) + 0.05 * value_noise(lat, u / 20, v / 20)
        return f.astype(np.float32)
    if mat.pattern == "bricks":  # 250 x 65 mm bricks in running bond, 10 mm mortar
        row = np.floor(v / 75)
        bu = np.mod(u + 125 * np.mod(row, 2), 260)
        tone = 0.8 + 0.2 * value_noise(lat, np.floor((u + 125 * np.mod(row, 2)) / 260) * 3.1, row * 5.7)
        return np.where((bu < 10) | (np.mod(v, 75) < 10), 1.5, tone).astype(np.float32)
    if mat.pattern == "dots":  # wallpaper: a grid of 20 mm dots
        du, dv = np.mod(u, p) - p / 2, np.mod(v, p) - p / 2
        return np.where(du * du + dv * dv < 100, 0.6, 1.0).astype(np.float32)
    return albedo_factor(mat, u, v, lat)


def _wall_mat(rng) -> Mat:
    """Paint, striped or dotted wallpaper in a light colour, or bare brick (periods in mm)."""
    paint = _PAINT[rng.integers(len(_PAINT))]
    kind = rng.choice(["noise", "stripes", "dots", "bricks"], p=[0.4, 0.25, 0.15, 0.2])
    if kind == "bricks":
        return Mat((0.55, 0.27, 0.18), "bricks", 75.0)
    return Mat(paint, str(kind), {"noise": 300.0, "stripes": 120.0, "dots": 80.0}[str(kind)])


def _rot_to(c, yaw, off) -> np.ndarray:
    """World point of offset `off` (3,) mm in a frame at `c` turned by `yaw` about the vertical."""
    return np.asarray(c, float) + yaw_matrix(yaw) @ np.asarray(off, float)


def _part(prims, c, yaw, off, half, mat) -> None:
    """Add a box of half sizes `half` (mm) centred at offset `off` in the frame (c, yaw)."""
    prims.append(box_prim(_rot_to(c, yaw, off), yaw, half, mat))


def _place_objects(prims, rng, c, yaw, half_lw, top_z, count) -> None:
    """Drop `count` household objects on a horizontal surface (centre c, half sizes mm, top z mm)."""
    placed = []  # (x, y, reach) mm on the surface: objects never overlap
    for _ in range(count):
        kind, half, mat = _OBJECTS[list(_OBJECTS)[rng.integers(len(_OBJECTS))]]
        mat = mat or Mat(_HOUSE[rng.integers(len(_HOUSE))], "noise", 30.0, spec=0.3, shiny=60.0)
        reach = np.hypot(half[0], half[1])
        lx, ly = rng.uniform(-1, 1, 2) * (np.asarray(half_lw) - reach)
        if reach > min(half_lw) - 10 or any(np.hypot(lx - x, ly - y) < reach + r + 10 for x, y, r in placed):
            continue
        placed.append((lx, ly, reach))
        center = _rot_to(c, yaw, (lx, ly, 0.0)) + [0.0, 0.0, top_z + half[2]]
        prims.append(Prim(kind, center, yaw_matrix(rng.uniform(0, np.pi)), np.asarray(half), mat))


def _add_furniture(prims, rng, name, c, yaw, size) -> tuple | None:
    """Add one piece (footprint centre c (x, y) mm; its local +y, the front, faces the room).

    Returns the surface objects may stand on: (centre, yaw, (half L, half W), top z), or None.
    """
    (L, D, H), wood = size, Mat(_WOOD[rng.integers(len(_WOOD))], "wood", 8.0)
    c = np.array([c[0], c[1], 0.0])
    if name == "bookcase":  # sides, back, five boards; books of real sizes stand on four
        for sx in (-1, 1):
            _part(prims, c, yaw, (sx * (L / 2 - 10), 0, H / 2), (10, D / 2, H / 2), wood)
        _part(prims, c, yaw, (0, -D / 2 + 5, H / 2), (L / 2 - 20, 5, H / 2), wood)
        boards = np.linspace(20, H - 10, 5)
        for z in boards:
            _part(prims, c, yaw, (0, 0, z), (L / 2 - 20, D / 2, 10), wood)
        for z0, z1 in zip(boards[:-1], boards[1:], strict=True):
            x = -L / 2 + 25
            while x < L / 2 - 70 and rng.random() > 0.04:
                t, h = rng.uniform(20, 50), min(rng.choice([210.0, 240.0, 300.0]), z1 - z0 - 30)
                book = Mat(_HOUSE[rng.integers(len(_HOUSE))], "noise", 50.0)
                _part(prims, c, yaw, (x + t / 2, 0, z0 + 10 + h / 2), (t / 2, 110, h / 2), book)
                x += t + (rng.uniform(60, 250) if rng.random() < 0.1 else 1.0)
        return c, yaw, (L / 2 - 20, D / 2), H
    if name == "sofa":  # seat, back and arms in one fabric
        fabric = Mat(_HOUSE[rng.integers(len(_HOUSE))], "noise", 6.0)
        _part(prims, c, yaw, (0, 50, 220), (L / 2, D / 2 - 50, 220), fabric)
        _part(prims, c, yaw, (0, -D / 2 + 100, H / 2), (L / 2, 100, H / 2), fabric)
        for sx in (-1, 1):
            _part(prims, c, yaw, (sx * (L / 2 - 100), 50, 310), (100, D / 2 - 50, 310), fabric)
        return None
    if name == "table":  # a 30 mm top on four 50 mm legs; 450 mm chairs beside the high ones
        _part(prims, c, yaw, (0, 0, H - 15), (L / 2, D / 2, 15), wood)
        for sx, sy in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
            leg = (sx * (L / 2 - 60), sy * (D / 2 - 60), H / 2 - 15)
            _part(prims, c, yaw, leg, (25, 25, H / 2 - 15), wood)
        for sy in (-1, 1) if H > 600 else ():
            if rng.random() < 0.6:  # a chair facing the table: seat, back, legs
                cc = _rot_to(c, yaw, (rng.uniform(-0.3, 0.3) * L, sy * (D / 2 + 150), 0))
                cy = yaw + (sy > 0) * np.pi
                _part(prims, cc, cy, (0, 0, 440), (225, 225, 15), wood)
                _part(prims, cc, cy, (0, -210, 680), (225, 15, 220), wood)
                for lx, ly in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
                    _part(prims, cc, cy, (lx * 200, ly * 200, 212), (15, 15, 212), wood)
        return c, yaw, (L / 2, D / 2), H
    paint = Mat(_PAINT[rng.integers(len(_PAINT))], "noise", 40.0, spec=0.1)
    _part(prims, c, yaw, (0, 0, H / 2), (L / 2, D / 2, H / 2), paint)
    for sx in (-1, 1) if L > 900 else (0,):  # door fronts: the gaps between them show their real size
        half = (L / 4 - 10 if sx else L / 2 - 10, 8, H / 2 - 40)
        _part(prims, c, yaw, (sx * L / 4, D / 2, H / 2), half, paint)
    return c, yaw, (L / 2, D / 2), H


def _clearance(prims, p) -> float:
    """Distance (mm) from point p (3,) to the nearest primitive's bounding box (planes skipped)."""
    boxes = [q for q in prims if q.kind != "plane"]
    return min(float(np.linalg.norm(np.maximum(np.abs(q.rot.T @ (p - q.center)) - q.half, 0))) for q in boxes)


def _sees(prims, eye, target) -> bool:
    """True if nothing stands between the eye and (within 10 cm of) the target point."""
    d = (target - eye).astype(np.float32)[:, None, None]  # (3, 1, 1): one ray, t = 1 at the target
    limit = 1 - 100 / np.linalg.norm(target - eye)
    return all(intersect_prim(p, eye, d)[0][0, 0] > limit for p in prims)


def _look(eye, target, roll) -> np.ndarray:
    """World-to-camera rotation (rows: image x right, image y down, optical axis) looking at target."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    return np.stack([c * x + s * y, -s * x + c * y, z])


def _free(taken, room_xy, c, yaw, half_lw, margin=150.0) -> bool:
    """Claim the footprint (centre c, half sizes mm, plus margin) if it is inside the room
    (x0, x1, y1) and clear of every footprint (x0, x1, y0, y1) in `taken`."""
    ex = abs(np.cos(yaw)) * half_lw[0] + abs(np.sin(yaw)) * half_lw[1]
    ey = abs(np.sin(yaw)) * half_lw[0] + abs(np.cos(yaw)) * half_lw[1]
    if c[0] - ex < room_xy[0] - 1 or c[0] + ex > room_xy[1] + 1 or c[1] + ey > room_xy[2] + 1:
        return False
    box = (c[0] - ex - margin, c[0] + ex + margin, c[1] - ey - margin, c[1] + ey + margin)
    if any(box[0] <= t[1] and t[0] <= box[1] and box[2] <= t[3] and t[2] <= box[3] for t in taken):
        return False
    taken.append(box)
    return True


def _build_source_scene(rng) -> tuple[list[Prim], np.ndarray, np.ndarray]:
    """Primitives, camera centre (3,) mm, world-to-camera rotation (3, 3).

    World: z up, floor z = 0, room x in [-lx/2, lx/2], y in [0, ly]; y < 1300 mm stays free of
    furniture so the room view's camera has a place to stand.
    """
    roofed = rng.random() < 0.7  # else a roofless courtyard, walls taller: some sky shows above them
    lx, ly = rng.uniform(3000, 8000), rng.uniform(4000, 10000)
    hc = rng.uniform(2500, 3200) if roofed else rng.uniform(3000, 4500)  # wall height, mm
    prims = [Prim("plane", np.zeros(3), np.eye(3), np.zeros(3), _FLOORS[rng.integers(len(_FLOORS))])]
    if roofed:  # the ceiling plane faces down
        ceiling = Mat((0.8, 0.8, 0.78), "noise", 400.0)
        prims.append(Prim("plane", np.array([0, 0, hc]), np.diag([1.0, -1.0, -1.0]), np.zeros(3), ceiling))
    # Wall frames: centre of the 100 mm thick wall, yaw; local -y points into the room.
    walls = {"far": (0.0, ly + 50, 0.0), "left": (-lx / 2 - 50, ly / 2, np.pi / 2),
             "right": (lx / 2 + 50, ly / 2, -np.pi / 2), "near": (0.0, -50.0, np.pi)}
    wall_mat, white = _wall_mat(rng), Mat((0.85, 0.85, 0.82), "noise", 50.0)
    for name, (x, y, yaw) in walls.items():
        half_len = (lx if name in ("far", "near") else ly) / 2 + 100
        if roofed:  # the eye is inside a closed convex room: inward-facing planes are exact and cheaper
            r = yaw_matrix(yaw)
            axes = np.stack([r[:, 0], [0, 0, 1], -r[:, 1]], 1)  # x along the wall, y up, z into the room
            prims.append(Prim("plane", _rot_to((x, y, 0), yaw, (0, -50, 0)), axes, np.zeros(3), wall_mat))
        else:
            prims.append(box_prim((x, y, hc / 2), yaw, (half_len, 50, hc / 2), wall_mat))
        _part(prims, (x, y, 40), yaw, (0, -60, 0), (half_len, 10, 40), white)  # skirting board
        used = []  # positions along the wall, mm
        for _ in range(rng.integers(0, 3)):  # a 900 x 2000 door or an A1 poster: known sizes
            door, at = rng.random() < 0.4, rng.uniform(-1, 1) * (half_len - 800)
            half, z = ((450, 10, 1000), 1000) if door else ((297, 10, 420), rng.uniform(1300, 1700))
            mat = Mat(_WOOD[1] if door else _HOUSE[rng.integers(len(_HOUSE))], "noise", 60.0)
            if all(abs(at - a) > 1100 for a in used):
                used.append(at)
                _part(prims, (x, y, z), yaw, (at, -60, 0), half, mat)
    taken, room_xy, tops = [(-lx / 2, lx / 2, 0.0, 1300.0)], (-lx / 2, lx / 2, ly), []
    for _ in range(rng.integers(3, 10)):  # against the far or a side wall, front to the room
        name = list(_AGAINST_WALL)[rng.integers(len(_AGAINST_WALL))]
        size, side = _AGAINST_WALL[name], str(rng.choice(["far", "left", "right"]))
        x, y, yaw = walls[side]
        s = rng.uniform(-1, 1) * ((lx if side == "far" else ly) - size[0]) / 2
        c = _rot_to((x, y, 0), yaw, (s, -55 - size[1] / 2, 0))
        if _free(taken, room_xy, c, yaw, (size[0] / 2, size[1] / 2), 0.0):
            tops.append((False, _add_furniture(prims, rng, name, c, yaw + np.pi, size)))
    if rng.random() < 0.5:  # a 2000 x 1400 mm rug, 5 mm thick
        c = rng.uniform([-lx / 2 + 1200, 1500], [lx / 2 - 1200, ly - 1000])
        rug = Mat(_HOUSE[rng.integers(len(_HOUSE))], str(rng.choice(["checker", "dots"])), 200.0)
        prims.append(box_prim((*c, 2.5), rng.uniform(-0.2, 0.2), (1000, 700, 2.5), rug))
    for _ in range(rng.integers(1, 4)):  # free-standing tables with room for chairs
        size = _TABLES[rng.integers(len(_TABLES))]
        c = rng.uniform([-lx / 2 + 1000, 1800], [lx / 2 - 1000, ly - 1200])
        yaw = np.pi / 2 * rng.integers(2) + rng.uniform(-0.3, 0.3)
        if _free(taken, room_xy, c, yaw, (size[0] / 2 + 400, size[1] / 2 + 400)):
            tops.append((True, _add_furniture(prims, rng, "table", c, yaw, size)))
    for _, top in tops:
        if top is not None:
            _place_objects(prims, rng, *top, rng.integers(1, 6))
    eye, rot = _place_camera(rng, prims, [top for is_table, top in tops if is_table], lx, ly)
    return prims, eye, rot


def _place_camera(rng, prims, tables, lx, ly) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) mm and world-to-camera rotation: half the time a close view of a table
    (pitch < 45 degrees, table in sight), else a standing view into the room (pitch 3-25 degrees)."""
    roll = rng.normal(0, np.radians(2))  # handheld
    for _ in range(30 if tables and rng.random() < 0.5 else 0):
        c, yaw, half_lw, top = tables[rng.integers(len(tables))]
        phi, gap = rng.uniform(0, 2 * np.pi), rng.uniform(250, 900)  # direction, distance from the edge
        reach = abs(np.cos(phi - yaw)) * half_lw[0] + abs(np.sin(phi - yaw)) * half_lw[1] + gap
        eye = np.array([c[0] + reach * np.cos(phi), c[1] + reach * np.sin(phi), top + rng.uniform(300, 800)])
        target = np.array([*(c[:2] + rng.uniform(-0.3, 0.3, 2) * min(half_lw)), top + 50])
        pitch = np.arctan2(eye[2] - target[2], np.hypot(*(eye[:2] - target[:2])))
        if abs(eye[0]) < lx / 2 - 400 and 400 < eye[1] < ly - 400 and pitch < np.radians(45):
            if _clearance(prims, eye) > _CLEARANCE_MM and _sees(prims, eye, target):
                return eye, _look(eye, target, roll)
    for _ in range(100):  # standing in the free strip by the near wall
        eye = rng.uniform([-lx / 2 + 600, 600, 1000], [lx / 2 - 600, 1200, 1800])
        if _clearance(prims, eye) > _CLEARANCE_MM:
            break
    heading = np.arctan2(-eye[0], ly / 2 - eye[1]) + rng.uniform(-0.5, 0.5)  # about the room centre
    pitch = rng.uniform(np.radians(3), np.radians(25))
    return eye, _look(eye, eye + [np.sin(heading), np.cos(heading), -np.tan(pitch)], roll)


def _in_view(p: Prim, eye, rot, intr, size_hw) -> bool:
    """False if the primitive's box lies wholly outside one face of the view frustum.

    cast gives any box reaching behind the camera the whole image; in a room, a third of the boxes
    lie behind it, so dropping those first roughly halves the render time.
    """
    if p.kind == "plane":
        return True
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T * p.half
    x, y, z = ((p.center + corners @ p.rot.T - eye) @ rot.T).T  # (8,) each, camera frame mm
    (fx, fy, cx, cy), (h, w) = intr, size_hw
    outside = [z < 1, fx * x + cx * z < 0, fx * x + (cx - w) * z > 0]  # behind, left of, right of the view
    outside += [fy * y + cy * z < 0, fy * y + (cy - h) * z > 0]  # above, below
    return not any(o.all() for o in outside)


def _intrinsics(rng, size_hw) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels: square pixels, a random horizontal field of view in _HFOV_DEG."""
    h, w = size_hw
    fx = w / 2 / np.tan(np.radians(rng.uniform(*_HFOV_DEG)) / 2)
    cx, cy = (w - 1) / 2 + rng.normal(0, 0.01 * w), (h - 1) / 2 + rng.normal(0, 0.01 * h)
    return float(fx), float(fx), float(cx), float(cy)  # Python floats keep cast in float32


def render_source_scene(seed: int, size_hw=SOURCE_SIZE_HW) -> tuple[np.ndarray, np.ndarray]:
    """Render one random room or tabletop scene.

    seed: non-negative int; the same seed gives the same scene. size_hw: (H, W) pixels, each >= 64
    (4:3 by default; the field of view is set on the width). Returns rgb (H, W, 3) uint8 and depth
    (H, W) float32 Z in mm in the camera frame, NaN only where the ray hits nothing within 12 m.
    """
    size_hw = check_size(size_hw)
    rng = np.random.default_rng(seed)
    prims, eye, rot = _build_source_scene(rng)
    intr = _intrinsics(rng, size_hw)
    prims = [p for p in prims if _in_view(p, eye, rot, intr, size_hw)]
    # Depth at pixel centres; colour from 2x2 rays per pixel (subpixel centres at +-1/4 pixel).
    depth = cast_rays(prims, eye, rot, intr, size_hw, normals=False)[0]
    ss_hw = (size_hw[0] * _SS, size_hw[1] * _SS)
    ss_intr = (intr[0] * _SS, intr[1] * _SS, intr[2] * _SS + (_SS - 1) / 2, intr[3] * _SS + (_SS - 1) / 2)
    zs, ids, nrm, rays, rects = cast_rays(prims, eye, rot, ss_intr, ss_hw)
    hit = zs < 1e5  # grazing rays can hit a plane at a finite but absurd distance: count that as sky
    zhit = np.where(hit, zs, np.float32(0))
    pts = eye.astype(np.float32)[:, None, None] + zhit * rays  # (3, 2H, 2W) world mm
    lat = np.pad(rng.uniform(-1, 1, (256, 256)).astype(np.float32), (0, 1), mode="wrap")
    alb, spec, shiny = material_maps(prims, rects, ids, pts, nrm, lat, _pattern)
    # A flash at the camera: n.l / distance^2 (the half vector is the view direction), exposed for a
    # distance that only partly follows the scene's, so overall brightness still says how far.
    dist2 = np.maximum(zhit * zhit * (rays * rays).sum(0), np.float32(1))
    ndl = np.clip(-(nrm * rays).sum(0) / np.sqrt((rays * rays).sum(0)), 0, 1)
    ref_mm = np.sqrt(np.median(np.sqrt(dist2[hit])) * 2000.0) if hit.any() else 2000.0
    falloff = np.float32(ref_mm**2 * rng.uniform(0.6, 1.0)) / dist2
    glint = np.power(ndl, shiny, where=spec > 0, out=np.zeros_like(ndl)) * spec * falloff
    ambient = np.float32(rng.uniform(0.02, 0.08)) * (0.8 + 0.2 * nrm[2])  # mostly from above
    lin = alb * (ndl * falloff + ambient) + 0.3 * glint
    sky = np.float32([0.45, 0.6, 0.85])[:, None, None] * np.float32(rng.uniform(0.4, 0.9))
    lin = np.where(hit, lin, sky)
    lin = lin.reshape(3, size_hw[0], _SS, size_hw[1], _SS).mean((2, 4))  # linear light, then gamma
    img = 255 * np.power(np.minimum(lin, 1), np.float32(1 / 2.2))
    img += rng.standard_normal(img.shape, dtype=np.float32) * (1 + 0.01 * img)  # sensor noise
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
    depth = np.where(depth <= _MAX_DEPTH_MM, depth, np.float32(np.nan)).astype(np.float32)
    return rgb, depth


def _scene_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed of scene `index`; the tag 1 keeps it apart from demo captures."""
    return int(np.random.SeedSequence([seed, index, 1]).generate_state(1)[0])


def _write_scene(job) -> tuple[Path, Path]:
    out_dir, key, seed, size_hw = job
    return write_pair(out_dir, key, *render_source_scene(seed, size_hw))


def generate_source_scenes(
    out_dir: str | Path, count: int, seed: int = 0, size_hw=SOURCE_SIZE_HW, workers: int | None = None
) -> list[tuple[Path, Path]]:
    """Write `count` source-domain scenes into `out_dir` in the layout `depth_lora.data.captures` reads.

    Files: `images/source-NNNNNN_color.png` (8-bit RGB) and `depth/source-NNNNNN_rawDepth.npy`
    (float32 (H, W) Z in mm, NaN = nothing within 12 m); scene i renders with a seed derived from
    (seed, i). size_hw: (H, W) pixels, each >= 64. workers: processes (default: all cores).
    Returns the (image, depth) paths in scene order. Raises ConfigError for a bad count, seed,
    size or workers, DataError (naming `out_dir`) if it already holds images/*.png or depth/*.npy
    (nothing is deleted).
    """
    out_dir, size_hw, old = check_generation_request(out_dir, count, seed, size_hw, workers)
    if old:
        raise DataError(out_dir, f"already holds {len(old)} capture file(s) in images/ and depth/; "
                        "source scenes are written only into a folder without captures")
    jobs = [(out_dir, f"{SOURCE_PREFIX}{i:06d}", _scene_seed(seed, i), size_hw) for i in range(count)]
    return run_generation(out_dir, _write_scene, jobs, workers, "source scenes", "scene")
