"""Export a trained adapter as a merged standalone model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from depth_lora.errors import DataError, DepthLoraError, ModelError
from depth_lora.predict import META_FILE, load_bundle


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Fold the LoRA weights into the base model (PEFT merge_and_unload) and save it standalone.

    The result loads with `AutoModelForDepthEstimation.from_pretrained(output_dir)`; its
    depth_lora.json (marked merged) lets `depth-lora predict` use it too.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise DataError(output_dir, "output folder is not empty; choose a new folder for the merged model")
    bundle = load_bundle(adapter_dir, device="cpu")
    if not hasattr(bundle.model, "merge_and_unload"):
        raise ModelError(f"{adapter_dir}: already a merged model")
    try:
        merged = bundle.model.merge_and_unload()
    except (ValueError, RuntimeError, DepthLoraError) as exc:
        raise ModelError(f"{adapter_dir}: cannot merge the adapter ({exc})") from None
    merged.save_pretrained(output_dir)
    meta = {**bundle.meta, "merged": True, "merged_from": str(adapter_dir)}
    split_file = Path(adapter_dir) / meta.get("split_file", "split.json")
    if split_file.is_file():  # so that `evaluate --adapter MERGED` finds the held-out split
        shutil.copy2(split_file, output_dir / split_file.name)
    if meta.get("base_model_dir"):  # a random-init base: keep it for the zero-shot baseline
        shutil.copytree(Path(adapter_dir) / meta["base_model_dir"], output_dir / meta["base_model_dir"])
    (output_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return output_dir
