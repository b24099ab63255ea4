"""Which input size lets the offline demo model see the bin? Chosen on validation only.

For each demo-data seed (quickstart's default data: one robot cell, `DEMO_COUNT` captures), the
demo job (demo-pretrained, the recommended recipe, 400 steps, early stopping as quickstart) is
trained at each input size, and its validation captures are scored at full resolution: RMSE in mm
of the fine-tuned model and of the zero-shot model calibrated on the training captures, the
oracle-aligned RMSE (the shape, whatever the scale and offset) and the detail correlation (bin
walls, parts, edges: `structure_scores` of experiments/domain_adaptation on the prediction and the
camera's depth area-averaged to 240x388, its protocol), with the time training took.

    python experiments/demo_model/run.py OUT [--seeds 0 1 2] [--sizes 126x196 168x266 210x336]

Each run is written to OUT/runs.json as it finishes (a stopped session loses one run at most);
prints the table of RESULTS.md. `run_training` scores the test split at its end, as every run
does; nothing here reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "domain_adaptation"))

from experiment import structure_scores  # noqa: E402

from depth_lora.data.captures import load_capture  # noqa: E402
from depth_lora.evaluation.report import predict_all_methods, select_captures, zero_shot_base  # noqa: E402
from depth_lora.inference.predict import load_bundle  # noqa: E402
from depth_lora.numeric.resize import masked_area_resize  # noqa: E402
from depth_lora.synthetic.demo import generate_demo_captures  # noqa: E402
from depth_lora.training.config import DEMO_COUNT  # noqa: E402
from depth_lora.training.quickstart import quickstart_config  # noqa: E402
from depth_lora.training.run import run_training  # noqa: E402

METHODS = ("fine_tuned", "fine_tuned_aligned", "zero_shot_calibrated", "zero_shot_aligned")
STRUCTURE_HW = (240, 388)  # experiments/domain_adaptation scores structure at this size


def score_validation(data: Path, run: Path) -> dict:
    """Mean over the validation captures of each method's RMSE (mm) and structure scores."""
    bundle = load_bundle(run)
    rows: dict[str, list] = {m: [] for m in METHODS}
    base = zero_shot_base(bundle)
    for files in select_captures(data, bundle, "val"):
        capture = load_capture(files)
        target = capture.depth_mm
        small_target = masked_area_resize(target, np.isfinite(target), STRUCTURE_HW)[0]
        for method, pred in predict_all_methods(bundle, capture, base).items():
            if method not in rows:
                continue
            valid = np.isfinite(target) & np.isfinite(pred)
            rmse = float(np.sqrt(np.mean((pred[valid] - target[valid]) ** 2)))
            small = masked_area_resize(pred, np.isfinite(pred), STRUCTURE_HW)[0]
            rows[method].append({"rmse": rmse, **structure_scores(small, small_target)})
    return {m: {k: float(np.mean([r[k] for r in v])) for k in v[0]} | {"captures": len(v)}
            for m, v in rows.items()}


def one_run(data: Path, out: Path, seed: int, size: list[int]) -> dict:
    cfg = quickstart_config(data, out, model="demo-pretrained", image_size=size, seed=seed, overwrite=True)
    start = time.perf_counter()
    result = run_training(cfg, progress=False)
    seconds = time.perf_counter() - start
    steps = max(e["step"] for e in result.log_history if "step" in e)
    return {"size": size, "seed": seed, "train_s": seconds, "steps": steps,
            "val": score_validation(data, out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", nargs="+", default=["126x196", "168x266", "210x336"])
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    for seed in args.seeds:
        data = out / f"data_{seed}"
        if not data.is_dir():  # quickstart's demo captures, drawn with this seed
            generate_demo_captures(data, DEMO_COUNT, seed=seed)
        for size in args.sizes:
            key = f"{seed}/{size}"
            if key not in runs:
                runs[key] = one_run(data, out / f"run_{seed}_{size}", seed, [int(x) for x in size.split("x")])
                runs_file.write_text(json.dumps(runs, indent=1) + "\n")
    print(format_table(runs, args.sizes))
    return 0


def format_table(runs: dict, sizes: list[str]) -> str:
    """Per input size: mean over seeds of each validation number (and the seeds it rests on)."""
    lines = ["| input (H x W) | seeds | fine_tuned RMSE | zero_shot_calibrated RMSE "
             "| fine_tuned_aligned RMSE | fine_tuned detail corr | zero_shot detail corr | train s (steps) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in sizes:
        rows = [r for k, r in runs.items() if k.endswith(f"/{size}")]
        if not rows:
            continue

        def mean(method, key, rows=rows):
            return np.mean([r["val"][method][key] for r in rows])

        steps = "/".join(str(r["steps"]) for r in rows)
        lines.append(
            f"| {size.replace('x', ' x ')} | {len(rows)} | {mean('fine_tuned', 'rmse'):.1f} "
            f"| {mean('zero_shot_calibrated', 'rmse'):.1f} | {mean('fine_tuned_aligned', 'rmse'):.1f} "
            f"| {mean('fine_tuned', 'detail_corr'):.3f} | {mean('zero_shot_aligned', 'detail_corr'):.3f} "
            f"| {np.mean([r['train_s'] for r in rows]):.0f} ({steps}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
