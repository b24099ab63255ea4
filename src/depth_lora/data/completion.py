"""Self-supervised completion examples: hide measured pixels of a capture, give the model what stays
visible as its prompt depth, and supervise on every measured pixel, the hidden ones weighted up.

No extra labels are needed: every measured pixel of a user's capture is ground truth for a hole
made on purpose. The camera's own holes are never supervised (there is nothing to compare with).
Holes are drawn in three of the kinds `numeric.hole_masks` scores (another capture's holes,
object-sized blobs, bands on the far side of depth edges), so that what training sees and what
evaluation scores are named alike; the fourth scoring kind (`border`) is never drawn.

A prompt is the visible depth area-averaged down to the prompt's size, its holes pre-filled by the
harmonic fill (Prompt Depth Anything normalises a prompt by its min and max per image, so it must
have no hole), in mm.
"""

from __future__ import annotations

import numpy as np
import torch

from depth_lora.data.dataset import PreparedCapture
from depth_lora.errors import ConfigError, DataError
from depth_lora.numeric.fill import harmonic_fill
from depth_lora.numeric.hole_masks import (
    EDGE_BAND_FRACTION,
    hide_blobs,
    hide_edge_bands,
    hide_like,
)
from depth_lora.numeric.resize import masked_area_resize

# The hole kinds a training example may draw; evaluation scores these and `border`, which training
# never draws (does a completer learn holes, or only our mask generator?).
TRAINING_HOLE_KINDS = ("other_capture", "blobs", "edge_bands")
HIDDEN_WEIGHT = 4.0  # loss weight of a hidden pixel against 1 for a measured one left visible
PROMPT_SCALE = 0.5  # prompt size / model input size: the neck's finest fusion map is input / 3.5
BLOB_SHARES = (0.03, 0.2)  # share of the measured pixels a training example hides in blobs
EDGE_BAND_SCALES = (0.5, 2.0)  # training edge bands: the scored width times a factor in this range
MIN_VISIBLE_SHARE = 0.2  # keep at least this share of the measured pixels visible
PROMPT_CHANNELS = (1, 2)  # the prompt's depth, and optionally the share of it that was measured
HOLE_DRAWS = 8  # hole draws (and prompts) made per training capture, once, before training


def check_hole_kinds(kinds) -> tuple[str, ...]:
    """The hole kinds asked for, without repeats; ConfigError for none or an unknown one."""
    kinds = tuple(dict.fromkeys((kinds,) if isinstance(kinds, str) else kinds))
    unknown = [k for k in kinds if k not in TRAINING_HOLE_KINDS]
    if not kinds or unknown:
        raise ConfigError(f"training hole kinds must be some of {', '.join(TRAINING_HOLE_KINDS)}, "
                          f"got {', '.join(kinds) or 'none'}")
    return kinds


def prompt_size_hw(size_hw: tuple[int, int], scale: float = PROMPT_SCALE) -> tuple[int, int]:
    return max(2, int(round(size_hw[0] * scale))), max(2, int(round(size_hw[1] * scale)))


def prompt_shape(size_hw: tuple[int, int], completion: dict) -> tuple[int, int, int]:
    """(channels, h', w') of the prompt a completion run (its record's `completion` settings) reads
    at input size `size_hw`."""
    return (completion.get("prompt_channels", 1), *prompt_size_hw(size_hw, completion["prompt_scale"]))


def hide_for_training(depth_mm: np.ndarray, kind: str, rng: np.random.Generator,
                      other_holes: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool: measured pixels of `depth_mm` to hide, of one kind, drawn at random.

    other_holes: another capture's hole mask (True = hole), for "other_capture"; mirrored at random.
    At most 1 - MIN_VISIBLE_SHARE of the measured pixels are hidden (the rest of a mask is dropped
    in a random order of its connected parts: the prompt must keep something to read).
    """
    measured = np.isfinite(depth_mm)
    if kind == "other_capture":
        holes = other_holes if other_holes is not None else ~measured[:, ::-1]
        hidden = hide_like(measured, holes[:, ::-1] if rng.random() < 0.5 else holes)
    elif kind == "blobs":
        hidden = hide_blobs(measured, rng, share=float(rng.uniform(*BLOB_SHARES)))
    elif kind == "edge_bands":
        width = EDGE_BAND_FRACTION * float(rng.uniform(*EDGE_BAND_SCALES))
        hidden = hide_edge_bands(depth_mm, band_fraction=width)
    else:
        raise ConfigError(f"unknown training hole kind {kind!r}; "
                          f"choose from {', '.join(TRAINING_HOLE_KINDS)}")
    return _keep_visible(hidden, measured, rng)


def _keep_visible(hidden: np.ndarray, measured: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    allowed = int((1 - MIN_VISIBLE_SHARE) * measured.sum())
    if hidden.sum() <= allowed:
        return hidden
    parts, count = ndimage.label(hidden)
    sizes = np.bincount(parts.ravel(), minlength=count + 1)
    keep, total = np.zeros(count + 1, dtype=bool), 0
    for label in rng.permutation(np.arange(1, count + 1)):
        if total + sizes[label] <= allowed:
            keep[label], total = True, total + sizes[label]
    return keep[parts] & hidden


def prompt_depth_mm(depth_mm: np.ndarray, visible: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 prompt in mm: the visible depth area-averaged to `size_hw` over visible pixels
    only, its holes filled harmonically (a hole no visible pixel reaches takes the visible median)."""
    return _prompt_and_coverage(depth_mm, visible, size_hw)[0]


def build_prompt(depth_mm: np.ndarray, visible: np.ndarray, size_hw: tuple[int, int],
                 channels: int = 1) -> np.ndarray:
    """(channels, h, w) float32: `prompt_depth_mm`, and with 2 channels the share of each prompt
    pixel that was measured (1 measured, 0 a filled hole), written into the prompt's own range
    (min + share x (max - min)): Prompt Depth Anything normalises the whole prompt by its min and
    max, which turns that channel back into the share exactly and leaves the depth channel as it was
    (model.prompt.add_validity_channel)."""
    if channels not in PROMPT_CHANNELS:
        raise ConfigError(f"a prompt has 1 or 2 channels, got {channels}")
    filled, coverage = _prompt_and_coverage(depth_mm, visible, size_hw)
    if channels == 1:
        return filled[None]
    lo, hi = float(filled.min()), float(filled.max())
    return np.stack([filled, lo + coverage * (hi - lo)]).astype(np.float32)


def capture_prompt(depth_mm: np.ndarray, size_hw: tuple[int, int], completion: dict) -> np.ndarray:
    """The prompt a completion run reads for a capture's whole measured depth (`depth_mm`, NaN or
    <= 0 where nothing was measured), at its prompt size for input size `size_hw`, as in training;
    `completion`: the run record's completion settings. DataError when nothing is measured."""
    with np.errstate(invalid="ignore"):
        measured = np.isfinite(depth_mm) & (depth_mm > 0)
    if not measured.any():
        raise DataError("depth", "no measured pixel: a completion model needs some measured depth")
    return build_prompt(depth_mm, measured, prompt_size_hw(size_hw, completion["prompt_scale"]),
                        completion.get("prompt_channels", 1))


def _prompt_and_coverage(depth_mm: np.ndarray, visible: np.ndarray, size_hw: tuple[int, int]):
    coarse, coverage = masked_area_resize(depth_mm, visible, size_hw)
    known = np.isfinite(coarse)
    if not known.any():
        raise ValueError("a prompt needs at least one visible measured pixel")
    filled = harmonic_fill(coarse, known)
    filled = np.where(np.isfinite(filled), filled, float(np.median(coarse[known]))).astype(np.float32)
    return filled, coverage


class CompletionDataset(torch.utils.data.Dataset):
    """Prepared captures -> completion examples, each with a hole drawn from a bank made once.

    Items: pixel_values (3, h, w) uint8; labels (h, w) float32 depth in mm (0 where the camera
    measured nothing); valid_mask (h, w) bool, the measured pixels; hidden_mask (h, w) bool, the
    measured pixels hidden from the prompt (what the validation RMSE scores); loss_weight (h, w)
    float32 (HIDDEN_WEIGHT on hidden pixels, 1 on visible measured ones, 0 elsewhere); prompt_depth
    (prompt_channels, h', w') float32 (`build_prompt`: mm, and the measured share).

    A prompt costs a sparse solve (its harmonic pre-fill: tens of ms at 518x840), too slow to make
    per item on a GPU's schedule. So `draws` holes per capture and their prompts are made once, at
    construction (in `workers` DataLoader worker processes when > 0), each seeded by `seed`, the
    capture and the draw: an item is one of its capture's draws, picked with torch's RNG, which the
    Trainer seeds (a run is reproducible; flips double the variety on top).
    fixed: one draw per capture, always the same (seeded by `seed` and the capture): a validation set.
    Another capture's holes are borrowed from the other captures of this dataset (its own,
    mirrored, when it has one capture).
    """

    def __init__(self, captures: list[PreparedCapture], kinds=TRAINING_HOLE_KINDS, fixed: bool = False,
                 seed: int = 0, prompt_scale: float = PROMPT_SCALE, hidden_weight: float = HIDDEN_WEIGHT,
                 prompt_channels: int = 1, draws: int = HOLE_DRAWS, workers: int = 0):
        if not captures:
            raise ConfigError("a completion dataset needs at least one capture")
        if draws < 1:
            raise ConfigError(f"a completion dataset needs at least one hole draw per capture, got {draws}")
        self.captures, self.kinds = captures, check_hole_kinds(kinds)
        self.fixed, self.seed, self.hidden_weight = fixed, seed, hidden_weight
        self.prompt_channels, self.draws = prompt_channels, 1 if fixed else draws
        self.prompt_hw = prompt_size_hw(captures[0].depth_mm.shape, prompt_scale)
        self._holes = [~np.isfinite(c.depth_mm) for c in captures]
        for capture, holes in zip(captures, self._holes, strict=True):
            if holes.all():
                raise DataError(capture.key, "no measured depth pixel at the model's input size: "
                                "nothing to hide or to prompt with")
        self._bank = self._draw_bank(workers)

    def __len__(self) -> int:
        return len(self.captures)

    def draw(self, i: int, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Hole draw `d` of capture `i`, made afresh: (packed hidden mask, prompt)."""
        rng = np.random.default_rng([self.seed, i] if self.fixed else [self.seed, i, d, 1])
        depth = self.captures[i].depth_mm
        kind = self.kinds[rng.integers(len(self.kinds))]
        others = [j for j in range(len(self.captures)) if j != i]
        other = self._holes[others[rng.integers(len(others))]] if others else None
        hidden = hide_for_training(depth, kind, rng, other)
        prompt = build_prompt(depth, np.isfinite(depth) & ~hidden, self.prompt_hw, self.prompt_channels)
        return np.packbits(hidden), prompt

    def _draw_bank(self, workers: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        jobs = [(i, d) for i in range(len(self.captures)) for d in range(self.draws)]
        loader = torch.utils.data.DataLoader(_Draws(self, jobs), batch_size=None, num_workers=workers,
                                             collate_fn=_as_is)
        bank = [[] for _ in self.captures]
        for (i, _), made in zip(jobs, loader, strict=True):
            bank[i].append(made)
        return bank

    def example(self, i: int, d: int | None = None) -> dict[str, np.ndarray]:
        """Item `i` as numpy arrays (see the class docstring), with its capture's hole draw `d`
        (default: one picked with torch's RNG)."""
        if d is None:
            d = int(torch.randint(self.draws, ())) if self.draws > 1 else 0
        packed, prompt = self._bank[i][d]
        depth = self.captures[i].depth_mm
        measured = np.isfinite(depth)
        hidden = np.unpackbits(packed, count=depth.size).reshape(depth.shape).astype(bool)
        weight = np.where(hidden, self.hidden_weight, (measured & ~hidden).astype(np.float32))
        return {"labels": np.where(measured, depth, 0.0).astype(np.float32), "valid_mask": measured,
                "hidden_mask": hidden, "loss_weight": weight.astype(np.float32), "prompt_depth": prompt}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.example(i).items()}
        item["pixel_values"] = torch.from_numpy(self.captures[i].rgb).permute(2, 0, 1)
        return item


class _Draws(torch.utils.data.Dataset):
    """The (capture, draw) pairs of a bank, for a DataLoader to make in worker processes."""

    def __init__(self, dataset: CompletionDataset, jobs: list[tuple[int, int]]):
        self.dataset, self.jobs = dataset, jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, k: int):
        return self.dataset.draw(*self.jobs[k])


def _as_is(made):
    return made
