"""`depth-lora quickstart`: the whole job on sensible defaults, for a first run."""

from __future__ import annotations

from pathlib import Path

from depth_lora.training.config import DEMO_COUNT
from depth_lora.training.quickstart import BANNER, OFFLINE_DEMO, ensure_captures, quickstart_config
from depth_lora.training.setup import OptionNames

QUICKSTART_OPTIONS = OptionNames(resume=None, overwrite="--overwrite", output="--output")


def run_quickstart(
    data_dir: str | Path,
    model: str | None,
    output_dir: str | Path,
    demo_count: int = DEMO_COUNT,
    depth_unit: str = "mm",
    overwrite: bool = False,
) -> None:
    """Demo captures if needed, analysis, fine-tuning, evaluation; prints where everything went."""
    from depth_lora.data.analysis import analyze_dataset, format_stats_table, write_stats_json
    from depth_lora.evaluation.report import format_report_table
    from depth_lora.evaluation.verdict import kept_checkpoint_line, plain_reading
    from depth_lora.training.run import run_training
    from depth_lora.training.setup import check_output_dir
    from depth_lora.viz import write_analysis_plots

    data_dir, output_dir = Path(data_dir), Path(output_dir)
    check_output_dir(output_dir, resume=False, overwrite=overwrite, names=QUICKSTART_OPTIONS)
    print(ensure_captures(data_dir, demo=True, count=demo_count))

    print(f"\n== Dataset analysis: {data_dir}")
    stats, kept = analyze_dataset(data_dir, depth_unit, keep=4)
    print(format_stats_table(stats))

    print(f"\n== Fine-tuning -> {output_dir}")
    cfg = quickstart_config(data_dir, output_dir, model, overwrite, depth_unit=depth_unit)
    offline = model is None and cfg.model == OFFLINE_DEMO["model"]
    eval_dir = output_dir / "evaluation" / "test"  # where `evaluate --plots` puts the test split's
    result = run_training(cfg, names=QUICKSTART_OPTIONS, evaluation_dir=eval_dir)
    # Written after training: the training run wants its output folder to itself when it starts.
    write_stats_json(stats, output_dir / "analysis" / "stats.json")
    plots = write_analysis_plots(stats, kept, output_dir / "analysis")

    print("\n== Evaluation on the held-out test split, in mm at full resolution")
    print(format_report_table(result.test_report) if result.test_report else "(no test captures)")
    kept = kept_checkpoint_line(result.metrics["val"])
    print(f"\n== What the table says\n{plain_reading(result.test_report, result.val_report, kept)}")
    print(f"\n== Where everything went\nAnalysis figures: {', '.join(str(p) for p in plots)}")
    print(f"Evaluation: {eval_dir}/ (report.json, captures.csv, one figure per capture, metrics.png)")
    print(f"Adapter and metadata: {output_dir}/ (depth_lora.json, adapter_model.safetensors)")
    print(next_steps(data_dir, output_dir))
    if offline:
        print(f"{BANNER}\n!! Reminder: these numbers come from the offline demo model, "
              f"not Depth Anything.\n{BANNER}")


def next_steps(data_dir: Path, output_dir: Path) -> str:
    """The commands a user runs next, with this run's folders filled in."""
    return "\n".join([
        "\n== Next steps",
        f"  watch the training curves:   tensorboard --logdir {output_dir / 'runs'}",
        f"  depth for your own images:   depth-lora predict IMAGE.png --adapter {output_dir} "
        f"--out {output_dir / 'predictions'}",
        f"  the validation split too:    depth-lora evaluate --data {data_dir} --adapter {output_dir} "
        f"--split val --plots   (figures in {output_dir / 'evaluation' / 'val'})",
        f"  train on your own captures:  put them in {data_dir}/images and {data_dir}/depth (README: Your "
        "captures), then depth-lora train --output another_folder",
        "  walk through it step by step: the notebook projet_transformers.ipynb (README: The notebook)",
    ])
