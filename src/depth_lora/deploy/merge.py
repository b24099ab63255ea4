"""Export a trained adapter as a merged standalone model."""

from __future__ import annotations

from pathlib import Path

from depth_lora.errors import DepthLoraError, ModelError
from depth_lora.inference.predict import load_bundle
from depth_lora.runs.folder import check_new_folder, copy_run_records, read_metrics, read_split, write_record
from depth_lora.runs.model_card import write_model_card


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Fold the LoRA weights into the base model (PEFT merge_and_unload) and save it standalone.

    The result loads with `AutoModelForDepthEstimation.from_pretrained(output_dir)`; its
    depth_lora.json (marked merged) lets `depth-lora predict` use it too.
    """
    output_dir = Path(output_dir)
    check_new_folder(output_dir, "the merged model")
    bundle = load_bundle(adapter_dir, device="cpu")
    if not hasattr(bundle.model, "merge_and_unload"):
        raise ModelError(f"{adapter_dir}: already a merged model")
    try:
        merged = bundle.model.merge_and_unload()
    except (ValueError, RuntimeError, DepthLoraError) as exc:
        raise ModelError(f"{adapter_dir}: cannot merge the adapter ({exc})") from None
    merged.save_pretrained(output_dir)
    record = bundle.record.derived(merged=True, merged_from=str(adapter_dir))
    copy_run_records(adapter_dir, output_dir, record)  # `evaluate --adapter MERGED` finds its test split
    write_record(output_dir, record)
    write_model_card(output_dir, record, read_metrics(adapter_dir), read_split(adapter_dir, record))
    return output_dir
