"""The output folder of a run: this module alone reads and writes its files, with a format version.

    OUT/
      depth_lora.json     what the run is: base model, labels, input size, calibration, ... (META_FILE)
      split.json          the train / val / test capture keys (data.save_split's format)
      metrics.json        the kept checkpoint's validation metrics and the test split's rows
      train_config.json   the resolved TrainConfig; written first, it marks the folder as a run
      README.md           the model card (Hugging Face conventions), see model_card.py
      adapter_config.json + adapter_model.safetensors (PEFT), or config.json + model.safetensors
      base_model/         a random-init base model, saved (hub and bundled bases are not copied)

`depth_lora.json` carries `format_version`; a folder written by a newer depth-lora with a format
this one does not know is refused with a one-line error instead of being misread.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from depth_lora.data import load_split, save_split
from depth_lora.errors import DataError, ModelError

FORMAT_VERSION = 1
META_FILE = "depth_lora.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.json"
RUN_CONFIG_FILE = "train_config.json"
CARD_FILE = "README.md"


def _write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def read_meta(folder: str | Path) -> dict:
    """`depth_lora.json` of an output folder, its format version checked.

    Raises ModelError (one line, naming the folder) if the folder is missing, is not a depth-lora
    output folder, or was written in a format newer than this version of depth-lora reads.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: adapter folder does not exist")
    path = folder / META_FILE
    if not path.is_file():
        raise ModelError(
            f"{folder}: no {META_FILE}, so not a depth-lora output folder (train one with `depth-lora train`)"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: expected a JSON object")
    version = meta.get("format_version", 1)  # the first folders wrote 1 as well
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path}: format_version {version!r} is newer than this depth-lora reads "
            f"(up to {FORMAT_VERSION}); upgrade depth-lora (pip install -U depth-lora) to use this folder"
        )
    return meta


def meta_path(folder: str | Path) -> Path:
    return Path(folder) / META_FILE


def write_meta(folder: str | Path, meta: dict) -> Path:
    """Write `depth_lora.json`, stamped with this format version."""
    return _write_json(Path(folder) / META_FILE, {"format_version": FORMAT_VERSION, **meta})


def split_path(folder: str | Path, meta: dict | None = None) -> Path:
    """Where the run's split is (the name recorded in depth_lora.json, split.json by default)."""
    return Path(folder) / (meta or {}).get("split_file", SPLIT_FILE)


def read_split(folder: str | Path, meta: dict | None = None) -> dict[str, list[str]] | None:
    """The run's train / val / test keys, or None if the folder has no split file."""
    path = split_path(folder, meta)
    return load_split(path) if path.is_file() else None


def write_split(folder: str | Path, split: dict[str, list[str]], **info) -> Path:
    return save_split(split, Path(folder) / SPLIT_FILE, **info)


def read_metrics(folder: str | Path) -> dict | None:
    path = Path(folder) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_metrics(folder: str | Path, metrics: dict) -> Path:
    return _write_json(Path(folder) / METRICS_FILE, metrics)


def read_run_config(folder: str | Path) -> dict | None:
    path = Path(folder) / RUN_CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_run_config(folder: str | Path, config: dict) -> Path:
    return _write_json(Path(folder) / RUN_CONFIG_FILE, config)


def is_run_folder(folder: str | Path) -> bool:
    """True if a depth-lora run wrote this folder (it holds train_config.json)."""
    return (Path(folder) / RUN_CONFIG_FILE).is_file()


def check_new_folder(folder: str | Path, what: str) -> None:
    """Refuse to write `what` into a folder that exists and holds anything: a user's files are never
    overwritten or mixed with ours."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(folder, f"output folder is not empty; choose a new folder for {what}")


def copy_run_records(source: str | Path, target: str | Path, meta: dict) -> None:
    """Copy what a derived folder (a merged model) needs from its run: the split (so `evaluate`
    finds the held-out captures), the metrics and a saved random-init base (the zero-shot rows)."""
    source, target = Path(source), Path(target)
    for path in (split_path(source, meta), source / METRICS_FILE):
        if path.is_file():
            shutil.copy2(path, target / path.name)
    if meta.get("base_model_dir"):
        shutil.copytree(source / meta["base_model_dir"], target / meta["base_model_dir"])
