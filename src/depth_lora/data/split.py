"""The train / val / test split: captures grouped by session (never one session in two splits),
a seeded split of the groups, and its JSON file."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from pathlib import Path

from depth_lora.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


# Capture stamps: the Zivid export's YY-MM-DD-HH-MM-SS and the common YYYY-MM-DD_HH-MM-SS (also
# with "-", "_", "T" or " " between date and time). Captures of one session (same bin, same camera
# pose, seconds apart) look alike: they must not land in train and test both.
_STAMP = re.compile(
    r"(?<!\d)(?P<year>\d{4}|\d{2})-(?P<month>\d{2})-(?P<day>\d{2})[-_T ]"
    r"(?P<hour>\d{2})-(?P<minute>\d{2})-(?P<second>\d{2})(?!\d)"
)
SESSION_GAP = dt.timedelta(minutes=10)
GROUP_BY_HELP = "'session', 'none' or 'regex:PATTERN' (PATTERN with a capture group)"


def capture_time(key: str) -> dt.datetime | None:
    """The time stamped in a capture's name, or None if it has no (valid) stamp."""
    match = _STAMP.search(key)
    if match is None:
        return None
    year = int(match["year"])
    year += 2000 if len(match["year"]) == 2 else 0
    try:
        return dt.datetime(year, *(int(match[k]) for k in ("month", "day", "hour", "minute", "second")))
    except ValueError:  # 13th month, 61st second: not a stamp
        return None


def parse_group_by(group_by: str) -> tuple[str, re.Pattern | None]:
    """("session" | "none" | "regex", compiled pattern or None); ConfigError if malformed."""
    if group_by in ("session", "none"):
        return group_by, None
    if group_by.startswith("regex:"):
        try:
            pattern = re.compile(group_by[len("regex:"):])
        except re.error as exc:
            raise ConfigError(f"--group-by: bad regular expression ({exc})") from None
        if pattern.groups < 1:
            raise ConfigError("--group-by regex:PATTERN needs a capture group, e.g. 'regex:^(bin\\d+)_'")
        return "regex", pattern
    raise ConfigError(f"--group-by takes {GROUP_BY_HELP}, got {group_by!r}")


def group_captures(
    keys: list[str], group_by: str = "session", gap: dt.timedelta = SESSION_GAP
) -> dict[str, str]:
    """Name the group of each capture key; captures of one group always share a split.

    session: stamped captures sorted by time form one session while consecutive stamps are less
    than `gap` apart (named after the session's first capture); an unstamped capture is its own
    group. none: every capture is its own group. regex:PATTERN: the first capture group of
    PATTERN (re.search) names the group; a key it does not match is its own group.
    """
    mode, pattern = parse_group_by(group_by)
    keys = sorted(set(keys))
    if mode == "none":
        return {k: k for k in keys}
    if mode == "regex":
        return {k: (m.group(1) if (m := pattern.search(k)) and m.group(1) else k) for k in keys}
    stamped = sorted((t, k) for k in keys if (t := capture_time(k)) is not None)
    groups = {k: k for k in keys}
    previous, name = None, None
    for time, key in stamped:
        if previous is None or time - previous >= gap:
            name = f"session {time:%Y-%m-%d %H:%M:%S}"
        groups[key] = name
        previous = time
    return groups


def make_split(
    keys: list[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    groups: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    """Split capture keys into train/val/test by a seeded shuffle of groups (same input, same split).

    `groups` maps each key to its group (see `group_captures`; default: every capture alone); a
    group is never spread over two splits. Whole groups go to test, then validation, while a group
    brings each closer to its share of the captures; each takes at least one group when there are 3
    groups or more, and at least two when there are 6 or more (so that neither held-out split is a
    single session, which could not carry a verdict), the smallest ones if none fits; the rest is
    train. Very unequal groups can still give
    a held-out split far more than its share: `run_training` warns then. With fewer than 3 groups
    there is nothing to hold out: val and test are empty.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError("val and test fractions must be in [0, 1) and sum to less than 1")
    keys = sorted(set(keys))
    groups = groups or {k: k for k in keys}
    members: dict[str, list[str]] = {}
    for key in keys:
        members.setdefault(groups.get(key, key), []).append(key)
    order = sorted(members)
    random.Random(seed).shuffle(order)
    n = len(keys)
    split: dict[str, list[str]] = {name: [] for name in SPLITS}
    if len(order) >= 3:
        # Test, then validation, take whole groups while a group brings them closer to their share;
        # a split with fewer than `least` groups takes the smallest. Groups the later splits need
        # stay back.
        least = 2 if len(order) >= 2 * len(SPLITS) else 1
        for name, fraction, keep in (("test", test_fraction, least + 1), ("val", val_fraction, least)):
            want, taken = fraction * n, 0
            while want > 0 and len(order) > keep:
                closer = (g for g in reversed(order) if len(split[name]) + len(members[g]) / 2 <= want)
                fit = next(closer, None)
                if fit is None:
                    if taken >= least:
                        break
                    fit = min(reversed(order), key=lambda g: len(members[g]))
                order.remove(fit)
                split[name] += members[fit]
                taken += 1
    for group in order:
        split["train"] += members[group]
    return {name: sorted(split[name]) for name in SPLITS}


def straddling_groups(split: dict[str, list[str]], groups: dict[str, str]) -> list[str]:
    """Groups with captures in more than one split (a leak: held-out numbers are optimistic)."""
    seen: dict[str, set[str]] = {}
    for name in SPLITS:
        for key in split[name]:
            seen.setdefault(groups.get(key, key), set()).add(name)
    return sorted(g for g, names in seen.items() if len(names) > 1)


def split_groups(split: dict[str, list[str]], groups: dict[str, str]) -> dict[str, list[str]]:
    """For each split, the groups it holds (sorted)."""
    return {name: sorted({groups.get(k, k) for k in split[name]}) for name in SPLITS}


def save_split(split: dict[str, list[str]], path: str | Path, **meta) -> Path:
    """Write a split as JSON ({"train": [...], "val": [...], "test": [...], **meta})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, **{k: split[k] for k in SPLITS}}, indent=2) + "\n")
    return path


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split written by `save_split`; raises DataError if it is not one."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "split file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not a JSON split file ({exc})") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in SPLITS):
        raise DataError(path, "split file must hold lists 'train', 'val' and 'test'")
    return {k: [str(key) for key in raw[k]] for k in SPLITS}
