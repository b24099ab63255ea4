"""Does the demo show the method? quickstart, as a new user runs it, on the demo data of several seeds.

For each seed: `depth-lora demo-data DIR --seed S` (the default demo: one robot cell), then
`depth-lora quickstart --data DIR --output OUT` offline (so on the bundled demo model), timed end
to end; read back from the run folder: the verdict, the test split's fine_tuned,
zero_shot_calibrated, fine_tuned_aligned, zero_shot_aligned and constant RMSE (mm), the kept and
last steps. The targets (issue 36): "paid off" in at least 4 of 5 seeds and "did worse" in none,
fine_tuned at most 0.5x zero_shot_calibrated, the fine-tuned shape (oracle-aligned RMSE) better
than zero-shot's. Nothing is chosen on these numbers: they are the test split, scored once per seed.

    python benchmarks/demo_seeds.py WORK [--seeds 0 1 2 3 4]

Writes WORK/seeds.json after every seed (a stopped session loses one seed at most) and prints
the markdown table benchmarks/RESULTS.md records. Run it alone: two torch jobs slow each other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROWS = ("fine_tuned", "zero_shot_calibrated", "fine_tuned_aligned", "zero_shot_aligned", "constant")


def one_seed(work: Path, seed: int) -> dict:
    data, out = work / f"data_{seed}", work / f"run_{seed}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not data.is_dir():
        subprocess.run(["depth-lora", "demo-data", str(data), "--seed", str(seed)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    command = ["depth-lora", "quickstart", "--data", str(data), "--output", str(out), "--overwrite"]
    log = subprocess.run(command, check=True, env=env, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    (work / f"quickstart_{seed}.log").write_text(log)
    report = json.loads((out / "evaluation" / "test" / "report.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "seed": seed, "quickstart_s": round(seconds, 1), "verdict": metrics["verdict"]["verdict"],
        "kept_step": metrics["val"].get("step"), "last_step": metrics["val"].get("last_step"),
        "test_captures": report["fine_tuned"]["captures"],
        "rmse_mm": {row: report[row]["rmse_mm"] for row in ROWS},
        "stopped": next((line for line in log.splitlines() if line.startswith("Training stopped")), None),
    }


def format_table(results: list[dict]) -> str:
    lines = ["| seed | verdict | fine_tuned | zero_shot_calibrated | ratio | fine_tuned_aligned | "
             "zero_shot_aligned | constant | quickstart s |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        mm = r["rmse_mm"]
        ratio = mm["fine_tuned"] / mm["zero_shot_calibrated"]
        lines.append(f"| {r['seed']} | {r['verdict']} | {mm['fine_tuned']:.1f} "
                     f"| {mm['zero_shot_calibrated']:.1f} | {ratio:.2f} | {mm['fine_tuned_aligned']:.1f} "
                     f"| {mm['zero_shot_aligned']:.1f} | {mm['constant']:.1f} | {r['quickstart_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    done_file = work / "seeds.json"
    done = {r["seed"]: r for r in json.loads(done_file.read_text())} if done_file.is_file() else {}
    for seed in args.seeds:
        if seed not in done:
            done[seed] = one_seed(work, seed)
            done_file.write_text(json.dumps(list(done.values()), indent=1) + "\n")
    print(format_table([done[s] for s in args.seeds]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
