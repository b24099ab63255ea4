"""How many evaluations without a better validation RMSE should a run wait before it stops?

Chosen on validation only. For each demo-data seed, quickstart's offline job (demo-pretrained,
its job size, the recommended recipe) runs every step with early stopping off, and its validation
RMSE at each evaluation is read from the Trainer's log. Early stopping with patience K would have
stopped at the K-th evaluation in a row without a better RMSE and kept the best one so far: what
that costs (its kept validation RMSE minus the full run's best) and what it saves (the steps not
run) follow from the log, without training again.

    python experiments/early_stopping/run.py OUT [--seeds 0 1 2] [--patience 1 2 3 4 5]

Writes OUT/runs.json (each run's evaluations) and prints the table of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from depth_lora.synthetic.demo import generate_demo_captures  # noqa: E402
from depth_lora.training.quickstart import quickstart_config  # noqa: E402
from depth_lora.training.run import run_training  # noqa: E402

DEMO_CAPTURES = 24  # as quickstart makes


def validation_curve(data: Path, out: Path, seed: int) -> list[tuple[int, float]]:
    """(step, validation RMSE mm) at each evaluation of a full run, early stopping off."""
    cfg = quickstart_config(data, out, model="demo-pretrained", early_stopping=0, seed=seed)
    result = run_training(cfg, progress=False)
    return [(e["step"], e["eval_rmse_mm"]) for e in result.log_history if "eval_rmse_mm" in e]


def stop_with_patience(curve: list[tuple[int, float]], patience: int) -> tuple[int, float]:
    """(the step a run would stop at, the best validation RMSE it would have kept)."""
    best, since = float("inf"), 0
    for step, rmse in curve:
        if rmse < best:
            best, since = rmse, 0
        else:
            since += 1
            if since >= patience:
                return step, best
    return curve[-1][0], best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patience", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args(argv)
    out = Path(args.out)
    runs_file = out / "runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    for seed in args.seeds:  # each run written as it finishes: a stopped session loses one run at most
        if str(seed) in runs:
            continue
        data = out / f"data_{seed}"
        if not data.is_dir():  # quickstart's demo captures, drawn with this seed
            generate_demo_captures(data, DEMO_CAPTURES, seed=seed)
        runs[str(seed)] = validation_curve(data, out / f"run_{seed}", seed)
        runs_file.write_text(json.dumps(runs, indent=1) + "\n")
    header = " | ".join(f"seed {s}: stop step, kept - best (mm)" for s in runs)
    print(f"| patience | {header} | mean steps run |")
    print("| ---: | " + " | ".join("---:" for _ in runs) + " | ---: |")
    for k in args.patience:
        cells, steps = [], []
        for curve in runs.values():
            step, kept = stop_with_patience(curve, k)
            best = min(rmse for _, rmse in curve)
            cells.append(f"{step}, {kept - best:+.1f}")
            steps.append(step / curve[-1][0])
        print(f"| {k} | " + " | ".join(cells) + f" | {100 * sum(steps) / len(steps):.0f} % |")
    for seed, curve in runs.items():
        print(f"seed {seed}: " + ", ".join(f"{step}: {rmse:.0f}" for step, rmse in curve))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
