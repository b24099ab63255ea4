"""The model card (README.md) of an output folder, in the Hugging Face convention.

A YAML header the hub reads (`base_model`, `library_name`, `pipeline_tag`, `tags`), then what the
run is (recipe, data, camera), its held-out table with intervals, and how to load it. `hf upload
USER/NAME OUT` then publishes a folder that explains itself.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from depth_lora.runs.folder import CARD_FILE, RunRecord
from depth_lora.runs.task import task_of

CARD_MARKER = "<!-- model card written by depth-lora -->"
OTHER_CARD_FILE = "MODEL_CARD.md"  # where the card goes if the folder already has a README of its own
TAGS = ["depth-estimation", "depth-anything", "lora", "peft", "depth-lora", "rgb-d", "metric-depth"]
TABLE_KEYS = (("rmse_mm", "RMSE mm"), ("mae_mm", "MAE mm"), ("abs_rel", "AbsRel"), ("delta1", "δ<1.25"))


def hub_base_model(record: RunRecord) -> str | None:
    """The base model's hub id, or None for a local folder or a random-init / bundled model."""
    name = str(record.base_model)
    if record.base_model_dir or "/" not in name or Path(name).exists():
        return None
    return name


def card_header(record: RunRecord) -> dict:
    merged = record.whole_model
    header = {"library_name": "transformers" if merged else "peft", "pipeline_tag": "depth-estimation",
              "tags": TAGS if not merged else [t for t in TAGS if t not in ("lora", "peft")]}
    base = hub_base_model(record)
    return {"base_model": base, **header} if base else header


def results_table(test: dict) -> list[str]:
    rows = [(m, r) for m, r in test.items() if isinstance(r, dict) and "rmse_mm" in r]
    if not rows:
        return ["No test split was held out, so there is no held-out table."]
    names = " | ".join(name for _, name in TABLE_KEYS)
    lines = [f"| method | {names} | RMSE 95 % interval | captures |", "|---" * (len(TABLE_KEYS) + 3) + "|"]
    for method, row in rows:
        cells = [f"{row[k]:.1f}" if k.endswith("_mm") else f"{row[k]:.3f}" for k, _ in TABLE_KEYS if k in row]
        lo, hi = row.get("rmse_mm_ci95", (float("nan"), float("nan")))
        count = row.get("captures", "?")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | [{lo:.1f}, {hi:.1f}] | {count} |")
    return lines


def model_card(record: RunRecord, metrics: dict | None, split: dict | None, folder_name: str) -> str:
    """The card's text (see the module docstring)."""
    task = task_of(record)
    header = yaml.safe_dump(card_header(record), sort_keys=False, allow_unicode=True).strip()
    lines = ["---", header, "---", CARD_MARKER, "", f"# {folder_name}", ""]
    if record.warning:
        lines += [f"> **WARNING:** {record.warning}.", ""]
    lines += task.card_intro(record)
    if split:
        lines.append(f"- Captures: {len(split['train'])} train, {len(split['val'])} validation, "
                     f"{len(split['test'])} test (split.json; sessions kept apart: "
                     f"{'no' if record.split_leaky else 'yes'})")
    camera = record.camera
    if camera:
        fx, fy, cx, cy = camera["intrinsics"]
        lines.append(f"- Camera: {camera['size_hw'][0]} x {camera['size_hw'][1]} px, intrinsics fx {fx:.1f} "
                     f"fy {fy:.1f} cx {cx:.1f} cy {cy:.1f} (fitted to the captures' XYZ maps)")
    lines += ["", "## Held-out results", ""]
    if (metrics or {}).get("test"):
        lines += task.card_results(metrics)
        verdict = metrics.get("verdict", {}).get("text")  # read from both held-out splits together
        lines += ["", "```text", verdict, "```"] if verdict else []
    else:
        lines += results_table({})
    return "\n".join(lines + task.card_use(record, folder_name))


def decode_rule(labels: dict) -> str:
    """How a monocular run's raw output (a label) becomes mm, as a formula."""
    lo, hi = labels.get("depth_min_mm", 0), labels.get("depth_max_mm", 0)
    if labels.get("kind") == "inverse":
        return f"depth_mm = {lo:.3f} / output"
    return f"depth_mm = output * {hi - lo:.3f} + {lo:.3f}"


def write_model_card(folder: str | Path, record: RunRecord, metrics: dict | None, split: dict | None) -> Path:
    """Write the card as README.md, or as MODEL_CARD.md if README.md is someone's own text (a
    README.md that is not a depth-lora card is never replaced)."""
    folder = Path(folder)
    path = folder / CARD_FILE
    if path.is_file() and CARD_MARKER not in path.read_text(errors="replace"):
        path = folder / OTHER_CARD_FILE
    path.write_text(model_card(record, metrics, split, folder.name))
    return path
