"""Small wording helpers shared by every printed line and figure title."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """'1 capture', '2 captures', '0 captures'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def size_hw(size) -> str:
    """An image size, height first, as every message writes it: '518 x 840 (H x W)'."""
    h, w = size[:2]
    return f"{h} x {w} (H x W)"
