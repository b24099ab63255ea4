"""The `depth-lora` command line: each verb parses its flags (cli_parser) and calls one package function."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

# Only light modules here: argument errors must not wait for torch/transformers (issue 15, item 10).
from depth_lora.cli.parser import build_parser, check_arguments
from depth_lora.errors import DepthLoraError
from depth_lora.training.config import TrainConfig, field_names
from depth_lora.training.config_file import read_config_file

__all__ = ["main"]


def _cmd_analyze(args: argparse.Namespace) -> int:
    from depth_lora.data.analysis import analyze_dataset, format_stats_table, write_stats_json

    stats, kept = analyze_dataset(args.data, args.depth_unit, keep=4 if args.plots else 0)
    print(format_stats_table(stats, per_capture=args.per_capture))
    if args.json:
        print(f"statistics written to {write_stats_json(stats, args.json)}")
    if args.plots:
        from depth_lora.viz import write_analysis_plots

        for path in write_analysis_plots(stats, kept, args.plots):
            print(f"figure written to {path}")
    return 0


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from depth_lora.synthetic.demo import generate_demo_captures

    pairs = generate_demo_captures(
        args.dir, args.count, seed=args.seed, size_hw=tuple(args.size), overwrite=args.overwrite,
        cells=args.cells,
    )
    print(f"{len(pairs)} demo captures written to {args.dir} (images/ and depth/)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{name: getattr(args, name) for name in field_names()})  # checked before torch

    from depth_lora.training.run import is_main_process, run_training

    result = run_training(cfg)
    if is_main_process():  # under torchrun, the one process that wrote the folder says so
        print(format_metrics_summary(result.metrics))
        print(f"adapter, depth_lora.json and metrics.json written to {result.output_dir}")
        print(f"TensorBoard: tensorboard --logdir {result.output_dir / 'runs'}")
    _end_process_group()
    return 0


def _end_process_group() -> None:
    """Under torchrun / accelerate: wait for every rank (rank 0 writes the files last), then close
    the process group, so no rank exits with the group's threads still running (a 2-process test
    run once aborted at exit with "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def format_metrics_summary(metrics: dict) -> str:
    """The kept checkpoint's validation line and the test split's RMSE per row (metrics.json)."""
    nan = float("nan")
    val = metrics["val"]
    lines = [f"validation (best checkpoint, step {val.get('step', '?')}, {val.get('resolution', '')}): "
             f"RMSE {val.get('rmse_mm', nan):.1f} mm, MAE {val.get('mae_mm', nan):.1f} mm"]
    test = metrics.get("test")
    if test:
        lines.append(f"test split, {test.get('resolution', '')} (`depth-lora evaluate` for the full table):")
        for method, row in test.items():
            if isinstance(row, dict) and "rmse_mm" in row:
                lo, hi = row.get("rmse_mm_ci95", (nan, nan))
                lines.append(f"  {method:<22} RMSE {row['rmse_mm']:7.1f} mm  [{lo:.1f}, {hi:.1f}]")
    return "\n".join(lines)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from depth_lora.inference.options import check_max_pixels
    from depth_lora.inference.predict import load_bundle
    from depth_lora.runs.task import task_of

    check_max_pixels(args.holes_max_pixels)  # before any work
    plots = args.plots if args.plots != "" else Path(args.adapter) / "evaluation" / args.split
    bundle = load_bundle(args.adapter, precision=args.precision)  # one load for every split scored
    code = task_of(bundle.record).evaluate(args, bundle, plots)  # a completion run: on hidden holes
    if plots:
        print(f"figures written to {plots}")
    return code


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from depth_lora.deploy.backends import describe_bundle, open_bundle
    from depth_lora.inference.predict import list_images, predict_files
    from depth_lora.numeric.geometry import intrinsics_from_xyz
    from depth_lora.runs.folder import read_record
    from depth_lora.runs.task import require_task

    intrinsics = tuple(args.intrinsics) if args.intrinsics else None
    if args.intrinsics_from:
        from depth_lora.data.captures import load_depth_mm

        load_depth_mm(args.intrinsics_from)  # checks the file; one-line error if it is bad
        intrinsics = intrinsics_from_xyz(np.load(args.intrinsics_from), args.intrinsics_from)
        fx, fy, cx, cy = intrinsics
        print(f"intrinsics from {args.intrinsics_from}: fx {fx:.2f} fy {fy:.2f} cx {cx:.2f} cy {cy:.2f}")
    images = list_images(args.inputs)
    # Refused before the model loads: a completion run needs depth too.
    require_task(read_record(args.adapter), args.adapter, "depth", "predict depth from an image alone")
    bundle = open_bundle(args.adapter, args.backend, args.precision)
    print(describe_bundle(bundle))
    if bundle.record.warning:
        print(f"depth-lora predict: WARNING: {bundle.record.warning}", file=sys.stderr)
    written, problems = predict_files(
        bundle, images, args.out, formats=args.format.split(","), intrinsics=intrinsics,
        batch_size=args.batch_size,
    )
    for problem in problems:  # the reasons first, then the count they explain
        print(f"depth-lora predict: skipped: {problem}", file=sys.stderr, flush=True)
    done = len(images) - len(problems)
    print(f"{done} of {len(images)} images predicted; {len(written)} files written to {args.out}")
    return 1 if problems else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from depth_lora.deploy.export import export_model
    from depth_lora.runs.folder import EXPORT_FORMAT_NAMES

    report = export_model(args.adapter, args.output, args.format, quantize=args.quantize,
                          images=args.check_images)
    seconds = ", ".join(f"{k} {v:.3f} s" for k, v in report.seconds_per_image.items())
    print(f"time per image (full resolution, mm out): {seconds}")
    print(f"{EXPORT_FORMAT_NAMES[args.format]} export written to {report.folder} (README.md says how to run "
          "it without depth-lora)")
    return 0


def _cmd_complete(args: argparse.Namespace) -> int:
    from depth_lora.data.captures import capture_inputs, load_rgb
    from depth_lora.data.dataset import default_image_size
    from depth_lora.deploy.backends import describe_bundle, open_bundle
    from depth_lora.inference.complete import complete_files, zero_shot_bundle

    captures = capture_inputs(args.inputs)
    fill_error = None
    if args.classical:
        bundle = None
        print("classical completion (no model): each hole filled from the measured depth around it, "
              "guided by the image")
        fill_error = _learn_fill_error(captures, args)
    elif args.model:
        size = args.image_size or default_image_size([load_rgb(captures[0].image).shape[:2]])
        bundle = zero_shot_bundle(args.model, tuple(size), precision=args.precision)
        print(f"zero-shot completion with {args.model} at {size[0]} x {size[1]} (no adapter)")
    else:
        bundle = open_bundle(args.adapter, args.backend, args.precision)
        print(describe_bundle(bundle))
    if (bundle and bundle.record.warning) or args.model == "demo-pretrained":
        print("depth-lora complete: WARNING: the offline DEMO model, not Depth Anything", file=sys.stderr)
    written, problems = complete_files(bundle, captures, args.out, formats=args.format.split(","),
                                       intrinsics=tuple(args.intrinsics) if args.intrinsics else None,
                                       depth_unit=args.depth_unit, fill_error=fill_error)
    for problem in problems:  # the reasons first, then the count they explain
        print(f"depth-lora complete: {problem}", file=sys.stderr, flush=True)
    print(f"{len(captures) - len(problems)} of {len(captures)} captures completed; "
          f"{len(written)} files written to {args.out}")
    return 1 if problems else 0


def _learn_fill_error(captures: list, args: argparse.Namespace):
    """The classical fill's error bar learned on (some of) the captures to complete, saved beside the
    completions (not into a run folder: its own is learned on its training captures); None (said)
    if they give nothing to learn from."""
    import json

    from depth_lora.data.captures import load_capture
    from depth_lora.errors import DataError
    from depth_lora.evaluation.fill_error import FILL_ERROR_FILE, calibrate_fill_error, calibration_subset
    from depth_lora.inference.complete import check_measured
    from depth_lora.runs.folder import is_run_folder

    loaded = []
    for files in calibration_subset(captures):
        try:
            capture = load_capture(files, args.depth_unit)
            check_measured(capture.depth_mm, files.depth)  # one complete refuses teaches nothing
        except DataError:
            continue  # complete_files names it
        loaded.append(capture)
    try:
        model = calibrate_fill_error(loaded) if loaded else None
    except ValueError as exc:
        model, reason = None, str(exc)
    else:
        reason = "no capture with enough measured pixels"
    if model is None:
        print(f"depth-lora complete: no error bars: {reason}", file=sys.stderr)
        return None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if is_run_folder(out):
        where = f"not saved: {out} is a run folder"
    else:
        (out / FILL_ERROR_FILE).write_text(json.dumps(model.to_dict(), indent=2) + "\n")
        where = str(out / FILL_ERROR_FILE)
    print(f"error bars learned on {model.captures} of the captures ({model.pixels:,} hidden pixels): {where}")
    return model


def _cmd_merge(args: argparse.Namespace) -> int:
    from depth_lora.deploy.merge import merge_adapter

    print(f"merged model written to {merge_adapter(args.adapter, args.output)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from depth_lora.bench.run import format_bench, run_bench, write_bench_json

    report = run_bench(
        args.data, args.model, tuple(args.image_size), args.batch_size, args.steps, args.precision,
        gradient_checkpointing=args.gradient_checkpointing, phases=args.phases, short_sides=args.short_sides,
        compile_model=args.compile, task=args.task,
    )
    print(format_bench(report))
    if args.json:
        print(f"written: {write_bench_json(report, args.json)}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from depth_lora.cli.quickstart import run_quickstart

    run_quickstart(
        data_dir=args.data,
        model=args.model,
        output_dir=args.output,
        demo_count=args.demo_count,
        depth_unit=args.depth_unit,
        overwrite=args.overwrite,
    )
    return 0


# Verb -> handler; cli_parser defines the verbs and their flags.
COMMANDS = {
    "quickstart": _cmd_quickstart,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "complete": _cmd_complete,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "merge": _cmd_merge,
    "bench": _cmd_bench,
    "analyze": _cmd_analyze,
    "demo-data": _cmd_demo_data,
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code. Bad input ends in one line on stderr, exit code 2."""
    # PEFT 0.21 calls an API transformers 5 deprecated; the warning says nothing a user can act on.
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "config", None):
            # The file's values become the defaults; flags on the command line still win.
            args = build_parser(config_defaults=read_config_file(args.config)).parse_args(argv)
        check_arguments(args)
        return COMMANDS[args.command](args)
    except DepthLoraError as exc:
        print(f"depth-lora {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"depth-lora {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
