"""Choosing a method's settings on validation so that instability shows (the experiment's step 3).

A setting is judged on every selection seed, not on seed 0 alone: one lucky seed at the top of a
learning-rate grid picked a rate that diverged on another seed in an earlier version of this
experiment. The rules, each written here once:

- settings are ranked by their mean validation RMSE over the seeds (each run's kept checkpoint,
  its best); a seed that blew up early pulls its setting's mean up;
- a run *diverged* when its validation RMSE rose above DIVERGED_RATIO times its best so far (the
  ratio the training log's DIVERGED notice uses): counted per setting and marked in the tables, not
  a ranking rule (its kept checkpoint is still its best one, and at a toy budget a run that learns
  fast and then overshoots is common);
- a choice at the edge of the rates tried extends the grid one step of the 1-2-5 ladder on that
  side before it is accepted (once per side); a choice still at the edge after that is reported so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from depth_lora.training.trainer import DIVERGED_RATIO

LADDER = (1.0, 2.0, 5.0)  # mantissas of the learning-rate grid: 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, ...


def diverged(curve: Sequence[tuple[int, float]], ratio: float = DIVERGED_RATIO) -> bool:
    """True when a validation curve [(step, RMSE)] rises above `ratio` x its best so far."""
    best = math.inf
    for _, rmse in curve:
        if rmse > ratio * best:
            return True
        best = min(best, rmse)
    return False


def ladder_step(rate: float, up: bool) -> float:
    """The next rate of the 1-2-5 ladder above (or below) `rate`, itself on the ladder."""
    exponent = math.floor(math.log10(rate) + 1e-9)
    mantissa = rate / 10.0**exponent
    index = min(range(len(LADDER)), key=lambda i: abs(LADDER[i] - mantissa))
    index += 1 if up else -1
    exponent += index // len(LADDER)
    return float(f"{LADDER[index % len(LADDER)]:g}e{exponent}")


def setting_summary(rows: list[dict]) -> dict:
    """One setting over its seeds: mean and per-seed validation RMSE, and how many diverged."""
    values = [r["val"]["rmse_mm"] for r in rows]
    return {"val_rmse_mm": float(np.mean(values)), "val_rmse_mm_per_seed": values,
            "seeds": [r["seed"] for r in rows], "diverged": sum(bool(r["diverged"]) for r in rows)}


def rank_key(summary: dict) -> float:
    return summary["val_rmse_mm"]


def choose_rate(train: Callable[[float, int], dict], grid: Sequence[float], seeds: Sequence[int]) -> dict:
    """Pick a learning rate: every rate of `grid` on every seed (`train(rate, seed)` -> a row with
    "val" and "diverged"), ranked by `rank_key`, the grid extended at its edge as above.

    Returns {"learning_rate", "tried": {rate: summary}, "extended": [rates added], "at_edge": the
    choice is still the lowest or highest rate tried}.
    """
    rates = sorted(grid)
    extended: list[float] = []
    sides_done: set[bool] = set()
    while True:
        tried = {rate: setting_summary([train(rate, seed) for seed in seeds]) for rate in rates}
        best = min(rates, key=lambda rate: rank_key(tried[rate]))
        side = True if best == rates[-1] else False if best == rates[0] else None
        if side is None or side in sides_done:
            return {"learning_rate": best, "tried": tried, "extended": extended,
                    "at_edge": best in (rates[0], rates[-1])}
        sides_done.add(side)
        new = ladder_step(best, up=side)
        extended.append(new)
        rates = sorted([*rates, new])
