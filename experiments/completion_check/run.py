"""Does a completion model learned from a user's captures fill held-out holes better than the
classical fills? A validation-only check of `train --task complete` at the scale of the offline demo.

`demo-pretrained` turned into a completion model, 40 generated captures in sessions (240x388, seed
3), the recipe's LoRA placement, 300 steps at 126x196, a grouped split (val 20 %, test 25 %, the
same for every run), seeds 0 and 1 (initialisation, data order, holes drawn). Learning rates with
and without the validity channel (--prompt-validity); then, at the default rate, the hidden pixels'
weight (--hidden-weight), the prompt's size (--prompt-scale) and the mix of training holes
(--hole-kinds). Each setting is ranked by its mean over the
seeds on the validation split's hidden pixels (every hole kind of `evaluate --holes`, the anchored
completer); the test rows are recorded, never used to choose.
Usage: python experiments/completion_check/run.py OUT_DIR (about 2.5 minutes a run on 2 AVX2 cores;
a run whose folder holds metrics.json is read back, not trained again). Writes
OUT_DIR/completion_check.json and prints a markdown table.
"""

import json
import sys
from pathlib import Path

import numpy as np

from depth_lora.data.captures import find_captures
from depth_lora.data.split import group_captures, make_split, save_split
from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.training.config import TrainConfig
from depth_lora.training.run import run_training

SETTINGS = {"lr 2e-4": {"learning_rate": 2e-4},
            "lr 1e-3": {"learning_rate": 1e-3},
            "lr 2e-3": {"learning_rate": 2e-3},
            "lr 2e-4, validity": {"learning_rate": 2e-4, "prompt_validity": True},
            "lr 1e-3, validity": {"learning_rate": 1e-3, "prompt_validity": True},
            "lr 2e-3, validity": {"learning_rate": 2e-3, "prompt_validity": True},
            # The task's other choices, at its default rate: hidden pixels' weight, prompt size, mask mix.
            "lr 2e-4, hidden 1x": {"learning_rate": 2e-4, "hidden_weight": 1.0},
            "lr 2e-4, hidden 16x": {"learning_rate": 2e-4, "hidden_weight": 16.0},
            "lr 2e-4, prompt 0.25": {"learning_rate": 2e-4, "prompt_scale": 0.25},
            "lr 2e-4, prompt 1": {"learning_rate": 2e-4, "prompt_scale": 1.0},
            "lr 2e-4, borrowed holes only": {"learning_rate": 2e-4, "hole_kinds": ["other_capture"]},
            "lr 2e-4, blobs + edge bands": {"learning_rate": 2e-4, "hole_kinds": ["blobs", "edge_bands"]}}
SEEDS = (0, 1)
ROWS = ("completer", "completer_unanchored", "completer_start", "zero_shot", "local_fit", "harmonic",
        "nearest", "telea")


def rmse_by_kind(split_metrics: dict) -> dict:
    return {method: {kind: row["rmse_mm"] for kind, row in split_metrics[method]["by_kind"].items()}
            | {"all": split_metrics[method]["rmse_mm"]} for method in ROWS if method in split_metrics}


def main(out: Path) -> None:
    data = out / "data"
    if not data.is_dir():
        generate_demo_captures(data, 40, seed=3, size_hw=(240, 388), cells=40)
    split_file = out / "split.json"  # one split for every run: the one seed 0 draws
    if not split_file.is_file():
        keys = [f.key for f in find_captures(data)]
        save_split(make_split(keys, 0.2, 0.25, 0, group_captures(keys, "session")), split_file)
    rows = []
    for name, options in SETTINGS.items():
        for seed in SEEDS:
            folder = out / "runs" / f"{name.replace(' ', '').replace(',', '_').replace('+', '_')}_s{seed}"
            cfg = TrainConfig(task="complete", model="demo-pretrained", data=str(data), output=str(folder),
                              max_steps=300, batch_size=4, image_size=[126, 196], seed=seed,
                              split=str(split_file), precision="fp32",
                              **options)
            if (folder / "metrics.json").is_file():
                metrics = json.loads((folder / "metrics.json").read_text())
            else:
                metrics = run_training(cfg, progress=False).metrics
            split = json.loads((folder / "split.json").read_text())
            row = {"setting": name, "seed": seed, "val": rmse_by_kind(metrics["val_full"]),
                   "test": rmse_by_kind(metrics["test"]), "best_step": metrics["val"].get("step"),
                   "captures": {k: len(v) for k, v in split.items() if isinstance(v, list)}}
            rows.append(row)
            print(name, seed, json.dumps(row["val"]["completer"]), "harmonic",
                  json.dumps(row["val"]["harmonic"]), flush=True)
            (out / "completion_check.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| setting | split | " + " | ".join(ROWS) + " |")
    for name in SETTINGS:
        for split in ("val", "test"):
            mine = [r[split] for r in rows if r["setting"] == name]
            cells = [f"{np.mean([m[method]['all'] for m in mine]):.1f}" for method in ROWS]
            print(f"| {name} | {split} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
