"""Zivid captures on disk: discover image/depth pairs, load and check them.

A capture is an RGB image `DIR/images/<key>[_color].png` and a point map
`DIR/depth/<key>[_rawDepth].npy` holding either (H, W, 3) X, Y, Z or (H, W) Z, in millimetres,
with NaN (or inf, or <= 0) where the camera returned nothing. The Zivid export names
`<stamp>_Zivid_acquisition_color.png` / `<stamp>_Zivid_acquisition_rawDepth.npy` share the key
`<stamp>_Zivid_acquisition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from depth_lora.errors import ConfigError, DataError

IMAGE_SUFFIX = "_color"
DEPTH_SUFFIX = "_rawDepth"
DEPTH_UNITS_TO_MM = {"mm": 1.0, "m": 1000.0}
# A valid median Z below this many "mm" is a scene closer than 2 cm: surely metres, not mm.
METRES_SUSPECT_MEDIAN = 20.0


@dataclass(frozen=True)
class CaptureFiles:
    """The two files of one capture; `key` is the stem they share."""

    key: str
    image: Path
    depth: Path


@dataclass
class Capture:
    """One loaded capture.

    rgb: (H, W, 3) uint8. depth_mm: (H, W) float32 Z in mm, NaN where invalid.
    """

    key: str
    rgb: np.ndarray
    depth_mm: np.ndarray

    @property
    def valid_mask(self) -> np.ndarray:
        """(H, W) bool, True where the camera measured a depth."""
        return np.isfinite(self.depth_mm)

    @property
    def size_hw(self) -> tuple[int, int]:
        return self.depth_mm.shape


def _key(stem: str, suffix: str) -> str:
    return stem[: -len(suffix)] if stem.endswith(suffix) and stem != suffix else stem


def check_data_folder(data_dir: str | Path, demo: bool = False) -> Path:
    """`data_dir` as a Path if it is a folder; DataError naming it otherwise. `demo`: the caller
    fills an empty folder with demo captures (quickstart), and the message says how to get that."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(data_dir, "no such folder; give the folder that holds your captures (images/, "
                        "depth/), or create an empty one to fill with demo captures" if demo else
                        "data folder does not exist")
    return data_dir


def find_captures(data_dir: str | Path) -> list[CaptureFiles]:
    """List the captures of `data_dir`, sorted by key.

    Raises DataError if the folder is missing, holds no capture, or holds an image without its
    depth file or a depth file without its image (all of them named in one message).
    """
    data_dir = check_data_folder(data_dir)
    images = {_key(p.stem, IMAGE_SUFFIX): p for p in sorted((data_dir / "images").glob("*.png"))}
    depths = {_key(p.stem, DEPTH_SUFFIX): p for p in sorted((data_dir / "depth").glob("*.npy"))}
    if not images and not depths:
        raise DataError(
            data_dir,
            "no captures found (expected images/*.png and depth/*.npy; "
            "`depth-lora demo-data DIR` generates demo captures)",
        )
    unmatched = [f"{p} has no depth file" for k, p in images.items() if k not in depths]
    unmatched += [f"{p} has no image" for k, p in depths.items() if k not in images]
    if unmatched:
        raise DataError(data_dir, f"{len(unmatched)} unpaired file(s): " + "; ".join(unmatched))
    return [CaptureFiles(k, images[k], depths[k]) for k in sorted(images)]


def capture_inputs(inputs: list[str | Path]) -> list[CaptureFiles]:
    """Captures named on a command line: data folders (images/ + depth/), or image files whose depth
    file is found the way a data folder pairs them (`../depth/<key>[_rawDepth].npy`, or beside it)."""
    found: list[CaptureFiles] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += find_captures(item)
        elif item.is_file():
            key = _key(item.stem, IMAGE_SUFFIX)
            folders = (item.parent.parent / "depth", item.parent)
            candidates = [d / f"{key}{suffix}.npy" for d in folders for suffix in (DEPTH_SUFFIX, "")]
            depth = next((p for p in candidates if p.is_file()), None)
            if depth is None:
                raise DataError(item, f"no depth file for this image (looked for {candidates[0]} and "
                                      f"{candidates[2]})")
            found.append(CaptureFiles(key, item, depth))
        else:
            raise DataError(item, "no such capture folder or image file")
    return found


def has_captures(data_dir: str | Path) -> bool:
    """True if `data_dir` holds at least one image or depth file (paired or not)."""
    data_dir = Path(data_dir)
    return any((data_dir / "images").glob("*.png")) or any((data_dir / "depth").glob("*.npy"))


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    RGB, RGBA (alpha dropped), palette, grayscale, 8- and 16-bit PNGs are accepted; 16-bit
    values are scaled to 8 bits.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: PIL's convert("RGB") would clip at 255, scale instead.
                gray = np.asarray(im, dtype=np.float32) * (255.0 / 65535.0)
                gray = np.clip(gray + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, "image file does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot read image ({exc.__class__.__name__}: {exc})") from None


def load_depth_mm(path: str | Path, depth_unit: str = "mm") -> np.ndarray:
    """Read a depth file as (H, W) float32 Z in mm, NaN where invalid (NaN, inf or <= 0).

    The file holds (H, W, 3) X, Y, Z (Z is channel 2) or (H, W) Z, as float16/32/64, in
    `depth_unit` ("mm" or "m"). Raises DataError for a file that is not a numeric array of one
    of those shapes, that has no valid pixel, or whose values look like metres while
    `depth_unit` is "mm".
    """
    path = Path(path)
    if depth_unit not in DEPTH_UNITS_TO_MM:
        raise ConfigError(f"depth unit must be one of {sorted(DEPTH_UNITS_TO_MM)}, got {depth_unit!r}")
    try:
        # mmap: only channel 2 of a 28 MB XYZ file is read into memory.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, "depth file does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise DataError(path, "not a single .npy array")
    if array.ndim == 3 and array.shape[2] == 3:
        z = array[:, :, 2]
    elif array.ndim == 2:
        z = array
    else:
        raise DataError(path, f"expected shape (H, W, 3) XYZ or (H, W) Z, got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise DataError(path, f"expected a numeric array, got dtype {array.dtype}")
    z = np.array(z, dtype=np.float32) * np.float32(DEPTH_UNITS_TO_MM[depth_unit])
    with np.errstate(invalid="ignore"):
        z[~(np.isfinite(z) & (z > 0))] = np.nan
    valid = z[np.isfinite(z)]
    if valid.size == 0:
        raise DataError(path, "depth has no valid pixel (all NaN, inf or <= 0)")
    if np.median(valid) < METRES_SUSPECT_MEDIAN:
        raise DataError(
            path,
            f"depth looks like metres (median {np.median(valid):.3g}), this tool expects mm; "
            "pass --depth-unit m to convert",
        )
    return z


def load_xyz_mm(path: str | Path, depth_unit: str = "mm") -> np.ndarray | None:
    """A depth file's (H, W, 3) X, Y, Z map in mm, or None if it holds Z only. Read after
    `load_depth_mm` accepted the file (that is where a bad file gets its one-line error)."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 3:
        return None
    return np.asarray(array, dtype=np.float32) * np.float32(DEPTH_UNITS_TO_MM[depth_unit])


def load_capture(files: CaptureFiles, depth_unit: str = "mm") -> Capture:
    """Load and check one capture; raises DataError naming the file if anything is wrong."""
    rgb = load_rgb(files.image)
    depth_mm = load_depth_mm(files.depth, depth_unit)
    if rgb.shape[:2] != depth_mm.shape:
        raise DataError(
            files.depth,
            f"depth is {depth_mm.shape[0]}x{depth_mm.shape[1]} (HxW) but its image "
            f"{files.image.name} is {rgb.shape[0]}x{rgb.shape[1]}",
        )
    return Capture(files.key, rgb, depth_mm)
