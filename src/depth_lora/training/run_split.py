"""Which captures a training run trains on and holds out: the resumed run's split, `--split`, or a
seeded split that keeps sessions apart; warnings for a leaky or lopsided one."""

from __future__ import annotations

from pathlib import Path

from depth_lora.data.split import group_captures, load_split, make_split, straddling_groups
from depth_lora.errors import DataError
from depth_lora.runs.folder import SPLIT_FILE
from depth_lora.training.config import TrainConfig


def choose_split(cfg: TrainConfig, output: Path, files: list, progress: bool):
    """(split, groups, read from OUT) for a run; DataError when it cannot hold out val and test."""
    keys = [f.key for f in files]
    groups = group_captures(keys, cfg.group_by)
    split_path = output / SPLIT_FILE
    from_output = cfg.resume and split_path.is_file()
    if from_output:
        split = load_split(split_path)
    elif cfg.split:
        split = load_split(cfg.split)
    else:
        split = make_split(keys, cfg.val_fraction, cfg.test_fraction, cfg.seed, groups)
        if not split["val"] and len(files) >= 3:
            # Too few groups to hold any out: split single captures, and say so everywhere.
            print(f"WARNING: {len(set(groups.values()))} group(s) of captures (--group-by {cfg.group_by}): "
                  "too few to keep groups apart in train/val/test; splitting single captures instead. "
                  "Held-out captures share sessions with training captures: held-out numbers will be "
                  "optimistic. Capture more sessions, or choose --group-by.", flush=True)
            split = make_split(keys, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    check_split(cfg, split, groups, files, split_path if from_output or not cfg.split else Path(cfg.split),
                progress)
    return split, groups, from_output


def check_split(cfg: TrainConfig, split: dict, groups: dict, files: list, source: Path,
                progress: bool) -> None:
    """Warn about a leaky or lopsided split; refuse one that names missing captures or holds
    nothing out."""
    if straddling_groups(split, groups) and progress:
        print(f"WARNING: the split puts captures of one session in more than one split (--group-by "
              f"{cfg.group_by}): held-out numbers will be optimistic.", flush=True)
    held_out = len(split["val"]) + len(split["test"])
    if held_out > 2 * (cfg.val_fraction + cfg.test_fraction) * len(files) and progress:
        print(f"WARNING: sessions of very unequal size: {held_out} of {len(files)} captures are held "
              "out for validation and test, far more than --val-fraction and --test-fraction ask; "
              "training gets fewer captures.", flush=True)
    known = {f.key for f in files}
    missing = [k for s in split.values() for k in s if k not in known]
    if missing:
        raise DataError(source, f"split names captures not in {cfg.data}: {', '.join(missing[:5])}")
    if cfg.split and not (split["train"] and split["val"]):
        raise DataError(cfg.split, "split has no train or no validation captures")
    if not split["val"]:
        raise DataError(cfg.data, f"{len(files)} capture(s): need at least 3 (train, val, test)")
