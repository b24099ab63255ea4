"""Small wording helpers shared by every printed line and figure title."""

from __future__ import annotations

import sys


def plural(count: int, noun: str) -> str:
    """'1 capture', '2 captures', '0 captures'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def size_hw(size) -> str:
    """An image size, height first, as every message writes it: '518 x 840 (H x W)'."""
    h, w = size[:2]
    return f"{h} x {w} (H x W)"


def live_progress() -> bool:
    """True where a progress bar redraws in place: a terminal or a notebook. In a log file a bar
    would leave a line (and cursor escapes) for every update."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules
