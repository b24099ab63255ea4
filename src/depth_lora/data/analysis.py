"""Dataset analysis: the statistics table of a folder of captures, computed one capture at a time."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from depth_lora.data.captures import Capture, find_captures, load_capture
from depth_lora.text import live_progress

# Depth histogram: fixed 10 mm bins from 0 to 10 m, accumulated while streaming so no second
# pass over the data is needed; values beyond the last edge land in the last bin.
HIST_BIN_MM = 10.0
HIST_MAX_MM = 10_000.0


@dataclass
class CaptureStats:
    """Per-capture row: depth statistics over the capture's valid pixels, in mm."""

    key: str
    height: int
    width: int
    valid_fraction: float
    depth_min_mm: float
    depth_max_mm: float
    depth_mean_mm: float
    depth_std_mm: float


@dataclass
class DatasetStats:
    """Statistics over all valid pixels of all captures (pooled), plus per-capture rows."""

    count: int
    resolutions: list[list[int]]
    depth_min_mm: float
    depth_max_mm: float
    depth_mean_mm: float
    depth_std_mm: float
    valid_fraction_mean: float
    valid_pixels: int
    captures: list[CaptureStats] = field(default_factory=list)
    histogram_counts: list[int] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        """The JSON summary (without per-capture rows and histogram)."""
        d = asdict(self)
        d.pop("captures")
        d.pop("histogram_counts")
        return d


class _RunningMoments:
    """Count, mean and M2 of a stream of batches (Chan et al. parallel update), in float64."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: np.ndarray) -> None:
        n_b = values.size
        if n_b == 0:
            return
        mean_b = float(values.mean(dtype=np.float64))
        m2_b = float(np.square(values - mean_b, dtype=np.float64).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0), like numpy's default."""
        return (self.m2 / self.n) ** 0.5 if self.n else float("nan")


def gallery_keys(keys: list[str], count: int) -> list[str]:
    """`count` capture keys spread over the sessions (data.split.group_captures): the first capture
    of each session in turn, then the second of each, ...; a gallery of one session shows one scene."""
    from depth_lora.data.split import group_captures

    groups = group_captures(keys)
    sessions: dict[str, list[str]] = {}
    for key in sorted(keys):
        sessions.setdefault(groups[key], []).append(key)
    rounds = max((len(members) for members in sessions.values()), default=0)
    spread = [members[i] for i in range(rounds) for members in sessions.values() if i < len(members)]
    return spread[:count]


def analyze_dataset(
    data_dir: str | Path,
    depth_unit: str = "mm",
    keep: int = 0,
    progress: bool = True,
) -> tuple[DatasetStats, list[Capture]]:
    """Compute the statistics of every capture in `data_dir`, holding one capture at a time.

    Args:
        data_dir: folder with images/ and depth/.
        depth_unit: unit of the depth files ("mm" or "m").
        keep: also return `keep` captures for a gallery plot, drawn across sessions (the first
            capture of each session, then the second of each, ...; `gallery_keys`).
        progress: show a tqdm progress bar.

    Returns:
        (stats, kept captures). Raises DataError on the first bad capture.
    """
    files = find_captures(data_dir)
    chosen = gallery_keys([f.key for f in files], keep)
    moments = _RunningMoments()
    hist = np.zeros(int(HIST_MAX_MM / HIST_BIN_MM), dtype=np.int64)
    rows: list[CaptureStats] = []
    kept: list[Capture] = []
    lo, hi = np.inf, -np.inf
    for f in tqdm(files, desc="analyse", unit="capture", disable=not (progress and live_progress())):
        capture = load_capture(f, depth_unit)
        z = capture.depth_mm[capture.valid_mask]  # (N,) valid depths in mm
        moments.update(z)
        bins = np.minimum((z / HIST_BIN_MM).astype(np.int64), hist.size - 1)
        hist += np.bincount(bins, minlength=hist.size)
        lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
        h, w = capture.size_hw
        rows.append(
            CaptureStats(
                key=f.key,
                height=h,
                width=w,
                valid_fraction=z.size / (h * w),
                depth_min_mm=float(z.min()),
                depth_max_mm=float(z.max()),
                depth_mean_mm=float(z.mean(dtype=np.float64)),
                depth_std_mm=float(z.std(dtype=np.float64)),
            )
        )
        if f.key in chosen:
            kept.append(capture)
    resolutions = sorted({(r.height, r.width) for r in rows})
    stats = DatasetStats(
        count=len(rows),
        resolutions=[list(r) for r in resolutions],
        depth_min_mm=lo,
        depth_max_mm=hi,
        depth_mean_mm=moments.mean,
        depth_std_mm=moments.std,
        valid_fraction_mean=float(np.mean([r.valid_fraction for r in rows])),
        valid_pixels=moments.n,
        captures=rows,
        histogram_counts=hist.tolist(),
    )
    return stats, kept


def format_stats_table(stats: DatasetStats, per_capture: bool = False) -> str:
    """The analysis as a plain-text table, as the original notebook printed it."""
    res = ", ".join(f"{h} x {w}" for h, w in stats.resolutions)
    lines = [
        f"{'captures':<22}{stats.count}",
        f"{'resolution(s) H x W':<22}{res}",
        f"{'depth min (mm)':<22}{stats.depth_min_mm:.2f}",
        f"{'depth max (mm)':<22}{stats.depth_max_mm:.2f}",
        f"{'depth mean (mm)':<22}{stats.depth_mean_mm:.2f}",
        f"{'depth std (mm)':<22}{stats.depth_std_mm:.2f}",
        f"{'valid pixels (mean)':<22}{100 * stats.valid_fraction_mean:.1f} %",
    ]
    if per_capture:
        lines += ["", f"{'capture':<40}{'H x W':>13}{'valid %':>9}{'min':>9}{'max':>9}{'mean':>9}{'std':>8}"]
        for r in stats.captures:
            lines.append(
                f"{r.key[:39]:<40}{f'{r.height} x {r.width}':>13}{100 * r.valid_fraction:>9.1f}"
                f"{r.depth_min_mm:>9.1f}{r.depth_max_mm:>9.1f}{r.depth_mean_mm:>9.1f}"
                f"{r.depth_std_mm:>8.1f}"
            )
    return "\n".join(lines)


def write_stats_json(stats: DatasetStats, path: str | Path, per_capture: bool = True) -> Path:
    """Write the summary keys (count, resolutions, depth_*_mm, valid_fraction_mean, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = stats.summary()
    if per_capture:
        payload["captures"] = [asdict(r) for r in stats.captures]
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
