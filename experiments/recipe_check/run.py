"""Which loss and learning rate should the shipped `recommended` recipe use? A validation-only check
at the scale of the product's own offline demo (`quickstart`, the notebook, the learning test).

`demo-pretrained`, 24 generated captures in sessions (240x388, seed 1), the recipe's placement,
150 steps at 126x196, a grouped split drawn per seed (val 20 %, test 25 %), seeds 0-4. Each setting
is ranked by its mean best-checkpoint validation RMSE over the seeds; the test rows are recorded,
never used to choose. Usage: python experiments/recipe_check/run.py OUT_DIR  (about 8 minutes on 2
CPU cores), writes OUT_DIR/recipe_check.json and prints a markdown table.
"""

import json
import sys
from pathlib import Path

import numpy as np

from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.training.config import TrainConfig
from depth_lora.training.run import run_training

SETTINGS = {"mse, lr 1e-3": ("mse", 1e-3), "silog, lr 1e-3": ("silog", 1e-3),
            "silog, lr 2e-3": ("silog", 2e-3), "silog, lr 5e-3": ("silog", 5e-3)}
SEEDS = (0, 1, 2, 3, 4)


def main(out: Path) -> None:
    data = out / "data"
    if not data.is_dir():
        generate_demo_captures(data, 24, seed=1, size_hw=(240, 388))
    rows = []
    for name, (loss, lr) in SETTINGS.items():
        for seed in SEEDS:
            cfg = TrainConfig(data=str(data), output=str(out / f"{loss}_{lr:g}_s{seed}"),
                              model="demo-pretrained", loss=loss, learning_rate=lr, seed=seed, max_steps=150,
                              image_size=[126, 196], eval_steps=50, val_fraction=0.2, test_fraction=0.25,
                              color_jitter=False, overwrite=True)
            metrics = run_training(cfg, progress=False).metrics
            test = metrics.get("test", {})
            rows.append({"setting": name, "seed": seed, "val_rmse_mm": metrics["val"]["rmse_mm"],
                         "test_rmse_mm": test.get("fine_tuned", {}).get("rmse_mm"),
                         "test_constant_rmse_mm": test.get("constant", {}).get("rmse_mm"),
                         "test_calibrated_rmse_mm": test.get("zero_shot_calibrated", {}).get("rmse_mm")})
            print(json.dumps(rows[-1]), flush=True)
    (out / "recipe_check.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| setting | val RMSE mm, mean (seeds 0-4) | val RMSE per seed | test / constant per seed |")
    print("| --- | ---: | --- | --- |")
    for name in SETTINGS:
        mine = [r for r in rows if r["setting"] == name]
        val = [r["val_rmse_mm"] for r in mine]
        ratio = [r["test_rmse_mm"] / r["test_constant_rmse_mm"] for r in mine]
        print(f"| {name} | {np.mean(val):.1f} | {', '.join(f'{v:.0f}' for v in val)} | "
              f"{', '.join(f'{v:.2f}' for v in ratio)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
