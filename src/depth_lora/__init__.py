"""depth-lora: adapt Depth Anything V2 to your own RGB-D camera with LoRA, measured in mm.

The names below are the package's public face: what the README and the notebook use. They are
imported lazily, on first use, so `import depth_lora` stays cheap (no torch until a name needs it).

    from depth_lora import load_bundle, predict_depth_mm, complete_depth_mm
    bundle = load_bundle("depth_anything_finetuned_lora_zivid")
    depth_mm = predict_depth_mm(bundle, rgb)                          # (H, W) float32, mm
    completed_mm, filled = complete_depth_mm(bundle, rgb, measured_mm)  # holes (NaN) filled

Where things live (one folder per concern; imports run downwards only):
    numeric/     pure numpy: depth metrics, alignment, hole fills, hole masks, geometry
    data/        captures on disk, the split, the training dataset, its cache and transforms
    model/       checkpoints (hub, local, bundled, random-init), heads, LoRA, precision
    runs/        a run's output folder: its typed record, split, metrics, model card
    inference/   predict and complete with a trained run
    evaluation/  calibration, the held-out report, hole-filling scores
    training/    the config (and quickstart's), the run, the Trainer subclass, the losses
    deploy/      merged models, ONNX and OpenVINO export, their runtimes, which backend runs a folder
    tasks/       what a run learns, one object each (runs.task.Task): depth, complete
    synthetic/   Zivid-like demo captures
    cli/, bench/ the depth-lora command line and its benchmark
    viz          every figure (`from depth_lora import viz`)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

import depth_lora.tasks  # noqa: E402, F401  registers the two tasks (runs.task.task_of finds them)

# name -> the module that defines it
_PUBLIC = {
    # data
    "find_captures": "depth_lora.data.captures",
    "load_capture": "depth_lora.data.captures",
    "load_rgb": "depth_lora.data.captures",
    "load_depth_mm": "depth_lora.data.captures",
    "analyze_dataset": "depth_lora.data.analysis",
    "format_stats_table": "depth_lora.data.analysis",
    "generate_demo_captures": "depth_lora.synthetic.demo",
    "ensure_captures": "depth_lora.training.quickstart",
    "model_input_view": "depth_lora.data.dataset",
    "intrinsics_from_xyz": "depth_lora.numeric.geometry",
    # model
    "build_model": "depth_lora.model.checkpoints",
    "apply_lora": "depth_lora.model.lora",
    "trainable_parameters_line": "depth_lora.model.lora",
    "lora_summary": "depth_lora.model.lora",
    "resolve_precision": "depth_lora.model.precision",
    # training
    "TrainConfig": "depth_lora.training.config",
    "run_training": "depth_lora.training.run",
    "quickstart_config": "depth_lora.training.quickstart",
    "describe_recipe": "depth_lora.training.describe",
    "NOTEBOOK_OPTIONS": "depth_lora.training.setup",
    "DepthTrainer": "depth_lora.training.trainer",
    "build_loss": "depth_lora.training.losses",
    # inference
    "load_bundle": "depth_lora.inference.predict",
    "predict_depth_mm": "depth_lora.inference.predict",
    "predict_files": "depth_lora.inference.predict",
    "complete_depth_mm": "depth_lora.inference.complete",
    "hidden_fill_error": "depth_lora.evaluation.fill_error",
    "run_fill_error": "depth_lora.evaluation.holes",
    # evaluation
    "run_evaluation": "depth_lora.evaluation.report",
    "format_report_table": "depth_lora.evaluation.report",
    "interpret_report": "depth_lora.evaluation.report",
    "plain_reading": "depth_lora.evaluation.verdict",
    "held_out_verdict": "depth_lora.evaluation.verdict",
    "kept_checkpoint_line": "depth_lora.evaluation.verdict",
    "predict_all_methods": "depth_lora.evaluation.report",
    "select_captures": "depth_lora.evaluation.report",
    "run_hole_evaluation": "depth_lora.evaluation.holes",
    "format_hole_table": "depth_lora.evaluation.holes",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'depth_lora' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
