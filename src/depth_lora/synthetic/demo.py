"""Writing generated captures to disk: demo datasets in sessions, with stamps and names like a
Zivid export's, rendered in parallel; the checks every generator shares."""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from depth_lora.data.captures import DEPTH_SUFFIX, IMAGE_SUFFIX
from depth_lora.errors import ConfigError, DataError
from depth_lora.synthetic.raycast import check_size
from depth_lora.synthetic.scenes import CELL_WORK_RANGE_MM, CELLS_WORK_RANGE_MM, ZIVID_SIZE_HW, render_capture
from depth_lora.text import live_progress

_STAMP_EPOCH = dt.datetime(2026, 1, 1, 8, 0, 0)
DEMO_PREFIX = "demo-"  # every generated capture's name starts so; --overwrite deletes only those


# Demo captures come in sessions, as a cell's captures do: a few captures seconds apart, then the
# next session an hour later. One cell (the default): every session is the same robot cell, its
# camera re-mounted a little, other parts and light; each session 3 captures, so that two sessions
# make a held-out split of 6. Several cells: session s shows cell s mod N, 2-4 captures each.
CELL_SESSION_SIZES = (3, 4)  # captures per session: 3
CELLS_SESSION_SIZES = (2, 5)  # captures per session: 2 to 4
_SECONDS_APART, _SESSION_HOURS = 20, 1


def session_plan(seed: int, count: int, cells: int = 1) -> list[tuple[int, int]]:
    """(session, index within the session) of each of `count` captures of a run seeded `seed`."""
    rng = np.random.default_rng([seed, 7])
    sizes = CELL_SESSION_SIZES if cells == 1 else CELLS_SESSION_SIZES
    plan: list[tuple[int, int]] = []
    session = 0
    while len(plan) < count:
        plan += [(session, j) for j in range(int(rng.integers(*sizes)))]
        session += 1
    return plan[:count]


def capture_stamps(seed: int, count: int, cells: int = 1) -> list[str]:
    """Zivid-like stamps 'demo-YYYY-MM-DD_HH-MM-SS' of a run: a day per seed, sessions an hour
    apart, captures of a session 20 s apart."""
    return [
        DEMO_PREFIX + (_STAMP_EPOCH + dt.timedelta(days=seed % 3650, hours=_SESSION_HOURS * session,
                                                   seconds=_SECONDS_APART * j)).strftime("%Y-%m-%d_%H-%M-%S")
        for session, j in session_plan(seed, count, cells)
    ]


def capture_stamp(seed: int, index: int, cells: int = 1) -> str:
    """The stamp of capture `index` of a run seeded `seed` (see `capture_stamps`)."""
    return capture_stamps(seed, index + 1, cells)[index]


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
    out_dir, stamp, (seed, scene_seed, session_seed), size_hw, work_range = job
    capture = render_capture(seed, size_hw, scene_seed, session_seed=session_seed, work_range_mm=work_range)
    return write_pair(out_dir, f"{stamp}_Zivid_acquisition", *capture)


def capture_seeds(seed: int, count: int, cells: int = 1) -> list[tuple[int, int, int | None]]:
    """(capture seed, cell seed, session seed or None) of each capture: a capture's own parts and
    noise, its cell, and in one cell its session's re-mount and lighting."""
    plan = session_plan(seed, count, cells)
    if cells == 1:
        return [(_derived_seed(seed, s, j, 1), _derived_seed(seed, 0), _derived_seed(seed, s, 2))
                for s, j in plan]
    return [(_derived_seed(seed, s, j, 1), _derived_seed(seed, s % cells), None) for s, j in plan]


def generate_demo_captures(
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    size_hw=ZIVID_SIZE_HW,
    overwrite: bool = False,
    workers: int | None = None,
    cells: int = 1,
) -> list[tuple[Path, Path]]:
    """Write `count` Zivid-like captures of bin-picking cells into `out_dir`.

    Files: `images/<stamp>_Zivid_acquisition_color.png` (8-bit RGB) and
    `depth/<stamp>_Zivid_acquisition_rawDepth.npy` (float32 (H, W, 3) X, Y, Z in mm, NaN =
    invalid), stamps from `capture_stamp(seed, i, cells)`. Captures come in sessions (other parts,
    20 s apart; sessions an hour apart), as `session_plan` says. cells 1 (default): one robot
    cell, its camera about 1.5 m above the table as a Zivid 2+ is mounted, re-mounted a little and
    lit differently in each session of 3 captures, as one user's captures are. cells N >= 2: the
    harder case, N cells at 0.26-2.6 m, session s in cell s mod N (a new cell each session while
    there are cells left), 2-4 captures each, the camera where the cell puts it.
    size_hw: (H, W) pixels, each >= 64. workers: processes (default: all cores).
    A folder already holding captures (images/*.png or depth/*.npy) is refused unless
    `overwrite` and all of them are demo captures (names starting with "demo-"), which are then
    deleted first: a user's own captures are never deleted.
    Returns the (image, depth) paths in capture order. Raises ConfigError for a bad count, seed,
    size or workers, DataError (naming `out_dir`) for a folder that holds captures.
    """
    out_dir, size_hw, old = check_generation_request(out_dir, count, seed, size_hw, workers)
    check_integer("cells", cells, 1)
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
    work_range = CELL_WORK_RANGE_MM if cells == 1 else CELLS_WORK_RANGE_MM
    stamps, seeds = capture_stamps(seed, count, cells), capture_seeds(seed, count, cells)
    jobs = [(out_dir, stamp, key, size_hw, work_range) for stamp, key in zip(stamps, seeds, strict=True)]
    return run_generation(out_dir, _write_capture, jobs, workers, "demo captures", "capture")


def check_generation_request(
    out_dir: str | Path, count: int, seed: int, size_hw, workers: int | None
) -> tuple[Path, tuple[int, int], list[Path]]:
    """A generator's checked arguments: (out_dir, size_hw, the capture files already in out_dir).

    Raises ConfigError for a bad count, seed, size or workers (None = all cores), DataError if
    out_dir exists and is not a folder.
    """
    size_hw = check_size(size_hw)
    checks = (("count", count, 1), ("seed", seed, 0), ("workers", 1 if workers is None else workers, 1))
    for name, value, low in checks:
        check_integer(name, value, low)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(out_dir, "exists and is not a folder")
    old = sorted((out_dir / "images").glob("*.png")) + sorted((out_dir / "depth").glob("*.npy"))
    return out_dir, size_hw, old


def check_integer(name: str, value, low: int) -> None:
    """ConfigError unless `value` is an integer (not a bool) >= `low`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


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
