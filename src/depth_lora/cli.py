"""The `depth-lora` command line: each verb parses its flags and calls one package function."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

# Only light modules here: argument errors must not wait for torch/transformers (issue 15, item 10).
from depth_lora import __version__
from depth_lora.config import DEFAULT_DATA, DEFAULT_OUTPUT, TrainConfig, field_names, read_config_file
from depth_lora.errors import ConfigError, DataError, DepthLoraError, ModelError
from depth_lora.flags import HelpFormatter, add_dataclass_flags

# What the field types cannot say: these lists have exactly two values.
TRAIN_FLAG_OVERRIDES = {
    "image_size": {"nargs": 2, "metavar": ("H", "W")},
    "label_percentiles": {"nargs": 2, "metavar": ("LO", "HI")},
    "lora_targets": {"metavar": "GROUP"},
}
# `depth-lora predict --format` and `complete --format` values; predict.FORMATS writes them (a test
# keeps the two equal).
PREDICT_FORMATS = ("npy", "png", "ply")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # precision.PRECISIONS, without importing torch here


def _add_depth_unit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--depth-unit",
        choices=["mm", "m"],
        default="mm",
        help="unit of the depth .npy files; 'm' converts metres to mm (default: mm)",
    )


def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="the forward's precision; the output stays fp32 (auto: bf16 on a CPU with native bf16 and on "
        "recent GPUs, fp16 on older GPUs, else fp32; bf16 moved the demo model's depth by 3 mm on "
        "average, see the README)",
    )


def _add_adapter(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--adapter", default=DEFAULT_OUTPUT,
        help=f"output folder of `depth-lora train` (or of `merge`) (default: {DEFAULT_OUTPUT})",
    )


def _cmd_analyze(args: argparse.Namespace) -> int:
    from depth_lora.analysis import analyze_dataset, format_stats_table, write_stats_json

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
    from depth_lora.synthetic import generate_demo_captures

    pairs = generate_demo_captures(
        args.dir, args.count, seed=args.seed, size_hw=tuple(args.size), overwrite=args.overwrite
    )
    print(f"{len(pairs)} demo captures written to {args.dir} (images/ and depth/)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{name: getattr(args, name) for name in field_names()})  # checked before torch

    from depth_lora.train import run_training

    result = run_training(cfg)
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
    from depth_lora.evaluate import format_report_table, run_evaluation, write_report

    report = run_evaluation(
        args.data, args.adapter, args.split, plots_dir=args.plots, tolerances_mm=tuple(args.tolerances_mm),
        precision=args.precision,
    )
    print(format_report_table(report))
    if args.holes:
        from depth_lora.hole_eval import format_hole_table, run_hole_evaluation

        holes = run_hole_evaluation(args.data, args.adapter, args.split, plots_dir=args.plots,
                                    precision=args.precision)
        print("\nFilling hidden holes (depth-lora complete), scored on the hidden pixels only:")
        print(format_hole_table(holes))
        report.holes = holes.to_dict()
    for path in write_report(report, args.json, args.csv):
        print(f"written: {path}")
    if args.plots:
        print(f"figures written to {args.plots}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from depth_lora.geometry import intrinsics_from_xyz
    from depth_lora.predict import list_images, load_bundle, predict_files

    intrinsics = tuple(args.intrinsics) if args.intrinsics else None
    if args.intrinsics_from:
        from depth_lora.data import load_depth_mm

        load_depth_mm(args.intrinsics_from)  # checks the file; one-line error if it is bad
        intrinsics = intrinsics_from_xyz(np.load(args.intrinsics_from), args.intrinsics_from)
        fx, fy, cx, cy = intrinsics
        print(f"intrinsics from {args.intrinsics_from}: fx {fx:.2f} fy {fy:.2f} cx {cx:.2f} cy {cy:.2f}")
    images = list_images(args.inputs)
    if _backend(args) == "onnx":
        from depth_lora.onnx_backend import load_onnx_bundle

        bundle = load_onnx_bundle(args.adapter)
        print(f"ONNX Runtime: {bundle.onnx_path}")
    else:
        bundle = load_bundle(args.adapter, precision=args.precision)
        print(f"PyTorch, {bundle.precision} on {bundle.device.type}")
    if bundle.meta.get("warning"):
        print(f"depth-lora predict: WARNING: {bundle.meta['warning']}", file=sys.stderr)
    written, problems = predict_files(
        bundle, images, args.out, formats=args.format.split(","), intrinsics=intrinsics,
        batch_size=args.batch_size,
    )
    done = len(images) - len(problems)
    print(f"{done} of {len(images)} images predicted; {len(written)} files written to {args.out}")
    for problem in problems:
        print(f"depth-lora predict: skipped: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _backend(args: argparse.Namespace) -> str:
    """predict's backend: --backend, or (auto) onnx for an ONNX export folder, else torch."""
    from depth_lora.onnx_backend import is_onnx_export

    exported = is_onnx_export(args.adapter)
    if args.backend == "torch" and exported:
        raise ModelError(f"{args.adapter}: an ONNX export; use --backend onnx (or the folder it was "
                         "exported from for PyTorch)")
    if args.backend == "onnx" and not exported:
        raise ModelError(f"{args.adapter}: not an ONNX export; make one with `depth-lora export --adapter "
                         f"{args.adapter} --output DIR`")
    return "onnx" if exported else "torch"


def _cmd_export(args: argparse.Namespace) -> int:
    from depth_lora.onnx_export import export_onnx

    report = export_onnx(args.adapter, args.output, quantize=args.quantize, images=args.check_images)
    seconds = ", ".join(f"{k} {v:.3f} s" for k, v in report.seconds_per_image.items())
    print(f"time per image (full resolution, mm out): {seconds}")
    print(f"ONNX export written to {report.folder} (README.md says how to run it without depth-lora)")
    return 0


def _cmd_complete(args: argparse.Namespace) -> int:
    from depth_lora.complete import complete_files, zero_shot_bundle
    from depth_lora.data import capture_inputs, load_rgb
    from depth_lora.dataset import default_image_size
    from depth_lora.predict import load_bundle

    captures = capture_inputs(args.inputs)
    if args.model:
        size = args.image_size or default_image_size([load_rgb(captures[0].image).shape[:2]])
        bundle = zero_shot_bundle(args.model, tuple(size), precision=args.precision)
        print(f"zero-shot completion with {args.model} at {size[0]} x {size[1]} (no adapter)")
    else:
        bundle = load_bundle(args.adapter, precision=args.precision)
    if bundle.meta.get("warning") or args.model == "demo-pretrained":
        print("depth-lora complete: WARNING: the offline DEMO model, not Depth Anything", file=sys.stderr)
    written, problems = complete_files(bundle, captures, args.out, formats=args.format.split(","),
                                       intrinsics=tuple(args.intrinsics) if args.intrinsics else None,
                                       depth_unit=args.depth_unit)
    print(f"{len(captures) - len(problems)} of {len(captures)} captures completed; "
          f"{len(written)} files written to {args.out}")
    for problem in problems:
        print(f"depth-lora complete: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from depth_lora.export import merge_adapter

    print(f"merged model written to {merge_adapter(args.adapter, args.output)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from depth_lora.bench import format_bench, run_bench, write_bench_json

    report = run_bench(
        args.data, args.model, tuple(args.image_size), args.batch_size, args.steps, args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    print(format_bench(report))
    if args.json:
        print(f"written: {write_bench_json(report, args.json)}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    if args.heads:
        from depth_lora.experiment_heads import run_head_comparison

        summary = run_head_comparison(args.out)["summary"]
        for head, row in summary.items():
            print(f"{head:<24} test RMSE {row['mean']:.1f} mm (seeds: "
                  f"{', '.join(f'{v:.1f}' for v in row['test_rmse_mm'])}), lr {row['learning_rate']:g}")
        print(f"written: {Path(args.out) / 'heads.json'}")
        return 0
    from depth_lora.experiment import format_table, run_experiment

    results = run_experiment(args.out, quick=args.quick)
    print(format_table(results["rows"]))
    minutes = results["seconds"] / 60
    print(f"done in {minutes:.1f} min ({len(results['rows'])} result rows: selection on validation, final "
          f"test scores, learning curve); results, table and figures in {args.out}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from depth_lora.quickstart import run_quickstart

    run_quickstart(
        data_dir=args.data,
        model=args.model,
        output_dir=args.output,
        demo_count=args.demo_count,
        depth_unit=args.depth_unit,
        overwrite=args.overwrite,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depth-lora",
        description="Adapt Depth Anything V2 to your RGB-D camera with LoRA; results in mm.",
    )
    parser.add_argument("--version", action="version", version=f"depth-lora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "quickstart",
        help="the whole job: demo data if needed, analysis, fine-tuning, evaluation",
        description="Analyse DATA (generating demo captures there if it holds none), fine-tune, "
        "evaluate on the held-out split and print where everything went.",
    )
    p.add_argument("--data", default=DEFAULT_DATA, help=f"captures folder (default: {DEFAULT_DATA})")
    p.add_argument(
        "--model",
        default=None,
        help="hub id, local model folder, 'demo-pretrained' or 'tiny' (default: "
        "depth-anything/Depth-Anything-V2-Small-hf; if the hub is unreachable quickstart says so and "
        "uses the offline demo model 'demo-pretrained', shipped with the package)",
    )
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"output folder (default: {DEFAULT_OUTPUT})")
    p.add_argument(
        "--demo-count", type=int, default=24, help="demo captures to generate if DATA is empty (default: 24)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in the output folder")
    _add_depth_unit(p)
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser(
        "train",
        help="fine-tune with LoRA on a folder of captures",
        description="Fine-tune Depth Anything with LoRA and a masked loss. Every option can also be "
        "set in a YAML/JSON file (--config); flags given on the command line win.",
    )
    add_dataclass_flags(p, TrainConfig, TRAIN_FLAG_OVERRIDES)
    p.add_argument(
        "--config", metavar="FILE",
        help="YAML or JSON file of options (keys as the flags, - or _); flags given on the command line win",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="held-out metrics in mm: fine-tuned vs calibrated zero-shot (the row to beat), oracles",
        description="Compare the fine-tuned model, at full resolution, with the zero-shot base model "
        "calibrated once on the training captures (the row fine-tuning must beat), both models given an "
        "oracle per-capture scale/shift alignment, and the constant mean-depth predictor.",
    )
    p.add_argument("--data", default=DEFAULT_DATA, help=f"captures folder (default: {DEFAULT_DATA})")
    _add_adapter(p)
    p.add_argument(
        "--split", choices=["test", "val", "all"], default="test",
        help="captures: a split recorded in the adapter folder, or all captures of --data (default: test)",
    )
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--csv", help="write one row per capture and method as CSV")
    p.add_argument(
        "--tolerances-mm", type=float, nargs="+", default=[5.0, 10.0], metavar="MM",
        help="report the share of pixels within each of these absolute errors (default: 5 10)",
    )
    p.add_argument("--plots", help="write a comparison figure per capture and a metrics bar chart here")
    p.add_argument(
        "--holes", action="store_true",
        help="also score hole filling: hide measured pixels (other captures' holes, object-sized blobs, "
        "bands beside depth edges), fill them with `complete` and classical fills, score the hidden pixels",
    )
    _add_precision(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "complete",
        help="fill the camera's holes: the prediction anchored to each capture's measured depth",
        description="For each capture, predict depth, fit it to the measured pixels (robust global fit, "
        "then a gradient-domain fill of the residual into each hole) and write the completed depth: "
        "measured pixels keep the camera's exact values.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="capture folders (images/ + depth/), or images with their depth file in ../depth/")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--adapter", default=DEFAULT_OUTPUT,
                        help=f"output folder of `depth-lora train` (default: {DEFAULT_OUTPUT})")
    source.add_argument("--model", help="no adapter: complete with this base model (hub id, folder, "
                        "demo-pretrained)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="with --model: model input size (default: shorter side 518, the capture's aspect)")
    p.add_argument("--out", required=True, help="folder for the completed captures")
    p.add_argument("--format", default="npy,png", help="comma-separated: npy, png, ply (default: npy,png)")
    p.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                   help="pinhole intrinsics for Z-only depth files (an XYZ map gives its own)")
    _add_depth_unit(p)
    _add_precision(p)
    p.set_defaults(func=_cmd_complete)

    p = sub.add_parser(
        "predict",
        help="depth in mm (npy, coloured png, ply point cloud) for new images",
        description="Predict depth in mm at each image's own resolution.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    _add_adapter(p)
    p.add_argument("--out", required=True, help="folder for the predictions")
    p.add_argument("--format", default="npy,png", help="comma-separated: npy, png, ply (default: npy,png)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                       help="pinhole intrinsics in pixels, for ply")
    group.add_argument("--intrinsics-from", metavar="FILE.npy",
                       help="estimate intrinsics from a capture's (H, W, 3) XYZ map, for ply")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="PyTorch, or ONNX Runtime for a folder written by `depth-lora export` "
                   "(auto: from the folder)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per forward pass (a GPU runs a batch faster; on CPU 1 is as fast)")
    _add_precision(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "export",
        help="export the adapted model to ONNX (optionally int8), checked against PyTorch in mm",
        description="Merge the adapter and export image -> labels as an ONNX graph at the trained input size "
        "(batch dynamic), with the label scheme beside it. A parity check against PyTorch at full resolution "
        "runs after every export; the export fails if the fp32 graph is off by more than 1 mm.",
    )
    _add_adapter(p)
    p.add_argument("--output", required=True, help="new folder for the export")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    p.add_argument("--quantize", choices=["int8"],
                   help="also write int8 weights (dynamic quantization) and report their cost in mm on the "
                   "run's held-out captures")
    p.add_argument("--check-images", nargs="+", metavar="IMAGE",
                   help="images for the parity check (default: the run's test captures, else generated ones)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "merge",
        help="fold the LoRA adapter into a standalone model folder",
        description="merge_and_unload() the adapter into a model loadable with "
        "AutoModelForDepthEstimation.from_pretrained (and by depth-lora predict).",
    )
    _add_adapter(p)
    p.add_argument("--output", required=True, help="new folder for the merged model")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser(
        "bench",
        help="training/inference speed and memory, ours beside the original pipeline",
        description="Measure our pipeline, a re-implementation of the original one, the bare model and "
        "full-resolution inference on the same captures, model, size and batch.",
    )
    p.add_argument("--data", required=True, help="captures folder (e.g. from depth-lora demo-data)")
    p.add_argument(
        "--model", default="small-random", help="model (default: small-random, the real Small architecture)"
    )
    p.add_argument("--image-size", type=int, nargs=2, default=[518, 840], metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=6, help="training steps per pipeline; the first is excluded")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="our pipeline and the bare model with gradient checkpointing (memory option)")
    p.add_argument("--json", help="write the report as JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "experiment",
        help="offline proof: pretrain a small model on synthetic rooms, adapt it to Zivid-like captures",
        description="Pretrain tiny Depth Anything on generated room scenes (SSI loss), then compare LoRA, "
        "LoRA + head, full fine-tuning and training from scratch on Zivid-like captures, in mm.",
    )
    p.add_argument("--out", required=True, help="new folder for data, models, results and figures")
    p.add_argument("--quick", action="store_true", help="about 2 minutes instead of ~60 (smoke test)")
    p.add_argument("--heads", action="store_true",
                   help="after a full run in OUT: add the pretrained model with a metric head (3 m and 20 m "
                   "ranges) beside the relative recipe, chosen and scored the same way (~15 min)")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser(
        "analyze",
        help="statistics of a folder of captures (depth in mm, valid pixels, resolutions)",
        description="Print the dataset statistics; optionally write them as JSON and plot them.",
    )
    p.add_argument("data", help="captures folder with images/*.png and depth/*.npy")
    p.add_argument("--json", help="write the statistics to this JSON file")
    p.add_argument("--plots", help="write depth_histogram.png and capture_gallery.png to this folder")
    p.add_argument("--per-capture", action="store_true", help="also print one row per capture")
    _add_depth_unit(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "demo-data",
        help="generate Zivid-like demo captures (bin-picking scenes with holes)",
        description="Write N generated captures in the Zivid export layout into DIR.",
    )
    p.add_argument("dir", help="folder to write images/ and depth/ into")
    p.add_argument("--count", type=int, default=24, help="number of captures (default: 24)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--size", type=int, nargs=2, default=[1200, 1944], metavar=("H", "W"),
        help="image size in pixels (default: 1200 1944, a Zivid 2)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace captures already in DIR")
    p.set_defaults(func=_cmd_demo_data)
    for p in (parser, *sub.choices.values()):
        p.formatter_class = HelpFormatter
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """The cheap checks of a verb's paths and values, run before its slow (torch) imports.

    Raises the DepthLoraError the verb would raise later, so the user sees the same one line at
    once: the format list and input paths of predict, the captures of --data, the adapter folder.
    """
    if args.command in ("predict", "complete"):
        formats = args.format.split(",")
        unknown = sorted(set(formats) - set(PREDICT_FORMATS))
        if unknown:
            choices = ", ".join(PREDICT_FORMATS)
            raise ConfigError(f"--format: unknown format(s) {', '.join(unknown)}; choose from {choices}")
    if args.command == "predict":
        if "ply" in formats and not (args.intrinsics or args.intrinsics_from):
            raise ConfigError(
                "--format ply: a point cloud needs --intrinsics FX FY CX CY or --intrinsics-from FILE.npy"
            )
        for item in map(Path, args.inputs):
            if not (item.is_dir() or item.is_file()):
                raise DataError(item, "no such image file or folder")
        if args.intrinsics_from and not Path(args.intrinsics_from).is_file():
            raise DataError(args.intrinsics_from, "depth file does not exist")
    if args.command in ("train", "evaluate", "analyze", "bench"):
        from depth_lora.data import find_captures  # numpy and PIL, no torch

        find_captures(args.data)  # the folder exists and holds paired captures
    if args.command == "complete":
        if args.model is None and not Path(args.adapter).is_dir():
            raise ModelError(f"{args.adapter}: adapter folder does not exist (or pass --model M for "
                             "zero-shot completion)")
        from depth_lora.data import capture_inputs

        capture_inputs(args.inputs)
    if args.command in ("evaluate", "predict", "merge", "export") and not Path(args.adapter).is_dir():
        raise ModelError(f"{args.adapter}: adapter folder does not exist")


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
            subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            subparsers.choices[args.command].set_defaults(**read_config_file(args.config))
            args = parser.parse_args(argv)
        check_arguments(args)
        return args.func(args)
    except DepthLoraError as exc:
        print(f"depth-lora {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"depth-lora {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
