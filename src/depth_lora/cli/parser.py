"""The `depth-lora` command line's arguments: every verb's flags, and the cheap checks run before
any slow import. Only light modules here: argument errors must not wait for torch/transformers."""

from __future__ import annotations

import argparse
from pathlib import Path

from depth_lora import __version__
from depth_lora.cli.flags import HelpFormatter, add_dataclass_flags
from depth_lora.errors import DataError, ModelError
from depth_lora.inference.options import BACKENDS, HOLE_SCORING_MAX_PIXELS, check_batch_size, check_formats
from depth_lora.model.precision import PRECISIONS
from depth_lora.runs.folder import EXPORT_FORMATS
from depth_lora.runs.task import task_names
from depth_lora.training.config import DEFAULT_DATA, DEFAULT_OUTPUT, DEMO_COUNT, TrainConfig

BENCH_PHASES = ("inference", "model_only", "ours", "reference")  # bench.run.PHASES, without torch
# What the field types cannot say: these lists have exactly two values.
TRAIN_FLAG_OVERRIDES = {
    "image_size": {"nargs": 2, "metavar": ("H", "W")},
    "label_percentiles": {"nargs": 2, "metavar": ("LO", "HI")},
    "lora_targets": {"metavar": "GROUP"},
    "hole_kinds": {"metavar": "KIND"},
}


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
        help=f"output folder of `depth-lora train` (or of `merge`; predict also takes one of `export`) "
        f"(default: {DEFAULT_OUTPUT})",
    )


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend", choices=BACKENDS, default="auto",
        help="the runtime: PyTorch for a training folder; ONNX Runtime or OpenVINO for a folder written by "
        "`depth-lora export` (OpenVINO runs ONNX exports too). auto: the fastest installed for the folder "
        "(OpenVINO for an export when it is installed, else ONNX Runtime; PyTorch for a training folder)",
    )


def _add_quickstart(sub) -> None:
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
        "--demo-count", type=int, default=DEMO_COUNT,
        help=f"demo captures to generate if DATA is empty (default: {DEMO_COUNT}, one robot cell)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in the output folder")
    _add_depth_unit(p)


def _add_train(sub) -> None:
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


def _add_evaluate(sub) -> None:
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
    p.add_argument("--plots", nargs="?", const="", metavar="DIR",
                   help="write a comparison figure per capture and a metrics bar chart to DIR (no DIR: "
                   "ADAPTER/evaluation/SPLIT, inside the run folder)")
    p.add_argument(
        "--holes", action="store_true",
        help="also score hole filling: hide measured pixels (other captures' holes, object-sized blobs, "
        "bands beside depth edges, a strip along the image border), fill them with `complete` and "
        "classical fills, score the hidden pixels",
    )
    p.add_argument(
        "--holes-max-pixels", type=int, default=HOLE_SCORING_MAX_PIXELS, metavar="N",
        help="score hole filling at an integer fraction of a capture's size that has at most N pixels "
        "(default: 600000, a Zivid 2's 1200 x 1944 (H x W) at 600 x 972, a quarter of the time); "
        "0: full size",
    )
    _add_precision(p)


def _add_complete(sub) -> None:
    p = sub.add_parser(
        "complete",
        help="fill the camera's holes: the prediction anchored to each capture's measured depth",
        description="For each capture, predict depth, fit it to the measured pixels (robust global fit, "
        "then a gradient-domain fill of the residual into each hole) and write the completed depth; "
        "with --classical, no model: each hole is filled from the measured depth around it, guided by "
        "the image. Measured pixels keep the camera's exact values.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="capture folders (images/ + depth/), or images with their depth file in ../depth/")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--adapter", default=DEFAULT_OUTPUT,
                        help=f"output folder of `depth-lora train` or `export` (default: {DEFAULT_OUTPUT})")
    source.add_argument("--model", help="no adapter: complete with this base model (hub id, folder, "
                        "demo-pretrained)")
    source.add_argument("--classical", action="store_true",
                        help="no model: fill each hole from the measured depth around it, guided by the "
                        "image (the colorization fill), with an error bar per filled pixel learned on the "
                        "captures given; seconds a capture")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="with --model: model input size (default: shorter side 518, the capture's aspect)")
    p.add_argument("--out", required=True, help="folder for the completed captures")
    p.add_argument("--format", default="npy,png", help="comma-separated: npy, png, ply (default: npy,png)")
    p.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                   help="pinhole intrinsics for Z-only depth files (an XYZ map gives its own)")
    _add_depth_unit(p)
    _add_backend(p)
    _add_precision(p)


def _add_predict(sub) -> None:
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
    _add_backend(p)
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per forward pass (a GPU runs a batch faster; on CPU 1 is as fast)")
    _add_precision(p)


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export the adapted model to ONNX or OpenVINO (optionally int8), checked against PyTorch in mm",
        description="Merge the adapter and export image -> labels as an ONNX graph or an OpenVINO IR at the "
        "trained input size (batch dynamic), with the label scheme beside it; a completion run (--task "
        "complete) as image + prompt depth -> depth in mm (fp32 only; `complete` runs it). A parity check "
        "against PyTorch at full resolution runs after every export; the export fails if the fp32 model is "
        "off by more than 1 mm.",
    )
    _add_adapter(p)
    p.add_argument("--output", required=True, help="new folder for the export")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                   help="onnx (ONNX Runtime, OpenVINO, TensorRT, ...) or openvino (an OpenVINO IR; needs the "
                   "[openvino] extra) (default: onnx)")
    p.add_argument("--quantize", choices=["int8"],
                   help="also write an int8 model (onnx: dynamic quantization; openvino: NNCF calibrated on "
                   "the run's training captures), report its cost in mm on the run's held-out captures, and "
                   "use it by default only if it is faster than fp32 on this CPU")
    p.add_argument("--check-images", nargs="+", metavar="IMAGE",
                   help="images for the parity check (default: the run's test captures, else generated ones)")


def _add_merge(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="fold the LoRA adapter into a standalone model folder",
        description="merge_and_unload() the adapter into a model loadable with "
        "AutoModelForDepthEstimation.from_pretrained (and by depth-lora predict).",
    )
    _add_adapter(p)
    p.add_argument("--output", required=True, help="new folder for the merged model")


def _add_bench(sub) -> None:
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
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="our pipeline and the bare model with gradient checkpointing (memory option)")
    p.add_argument("--phases", nargs="+", default=list(BENCH_PHASES), choices=BENCH_PHASES,
                   metavar="PHASE", help=f"what to measure: {', '.join(BENCH_PHASES)} (default: all; "
                   "inference alone takes a few minutes, the training phases ~10 at 518x840 on 2 AVX2 cores)")
    p.add_argument("--short-sides", type=int, nargs="*", default=[434, 364], metavar="PX",
                   help="inference is also timed at these smaller short sides (same aspect ratio, multiples "
                   "of 14) beside the trained size (default: 434 364)")
    p.add_argument("--compile", action="store_true",
                   help="the training phases (ours, model_only) with torch.compile, as train --compile")
    p.add_argument("--task", choices=task_names(), default="depth",
                   help="complete: a completion run's training (with --phases ours): its loader against its "
                   "steps")
    p.add_argument("--json", help="write the report as JSON")


def _add_analyze(sub) -> None:
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


def _add_demo_data(sub) -> None:
    p = sub.add_parser(
        "demo-data",
        help="generate Zivid-like demo captures (bin-picking scenes with holes)",
        description="Write N generated captures in the Zivid export layout into DIR.",
    )
    p.add_argument("dir", help="folder to write images/ and depth/ into")
    p.add_argument("--count", type=int, default=DEMO_COUNT,
                   help=f"number of captures (default: {DEMO_COUNT})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--cells", type=int, default=1,
        help="robot cells the sessions are spread over (default: 1, one cell, its camera about 1.5 m "
        "above the table, as one user's captures are; N >= 2: N cells at 0.26-2.6 m, the harder case)",
    )
    p.add_argument(
        "--size", type=int, nargs=2, default=[1200, 1944], metavar=("H", "W"),
        help="image size in pixels (default: 1200 1944, a Zivid 2)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace captures already in DIR")


# In the order `depth-lora --help` lists them.
VERBS = (_add_quickstart, _add_train, _add_evaluate, _add_complete, _add_predict, _add_export, _add_merge,
         _add_bench, _add_analyze, _add_demo_data)


def build_parser(config_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The `depth-lora` parser. `config_defaults`: option values from a --config file, applied to
    the chosen verb as defaults (flags on the command line still win)."""
    parser = argparse.ArgumentParser(
        prog="depth-lora",
        description="Adapt Depth Anything V2 to your RGB-D camera with LoRA; results in mm.",
    )
    parser.add_argument("--version", action="version", version=f"depth-lora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_verb in VERBS:
        add_verb(sub)
    for name, p in sub.choices.items():
        p.formatter_class = HelpFormatter
        if config_defaults and name == "train":
            p.set_defaults(**config_defaults)
    parser.formatter_class = HelpFormatter
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """The cheap checks of a verb's paths and values, run before its slow (torch) imports.

    Raises the DepthLoraError the verb would raise later, so the user sees the same one line at
    once: the format list and input paths of predict, the captures of --data, the adapter folder.
    """
    if args.command == "complete":
        check_formats(args.format.split(","))  # complete takes intrinsics from each capture's XYZ map
    if args.command == "predict":
        check_formats(args.format.split(","), has_intrinsics=bool(args.intrinsics or args.intrinsics_from))
        check_batch_size(args.batch_size)
        for item in map(Path, args.inputs):
            if not (item.is_dir() or item.is_file()):
                raise DataError(item, "no such image file or folder")
        if args.intrinsics_from and not Path(args.intrinsics_from).is_file():
            raise DataError(args.intrinsics_from, "depth file does not exist")
    if args.command in ("train", "evaluate", "analyze", "bench"):
        from depth_lora.data.captures import find_captures

        find_captures(args.data)  # the folder exists and holds paired captures
    if args.command == "quickstart":  # a missing folder is a typo, not a place for demo captures
        from depth_lora.data.captures import check_data_folder

        check_data_folder(args.data, demo=True)
    if args.command == "complete":
        if args.model is None and not args.classical and not Path(args.adapter).is_dir():
            raise ModelError(f"{args.adapter}: adapter folder does not exist (or pass --model M for "
                             "zero-shot completion, or --classical for no model)")
        if (args.model is not None or args.classical) and args.backend not in ("auto", "torch"):
            raise ModelError(f"--backend {args.backend} runs an export folder (--adapter DIR); --model runs "
                             "in PyTorch and --classical runs no model")
        from depth_lora.data.captures import capture_inputs

        capture_inputs(args.inputs)
    if args.command in ("evaluate", "predict", "merge", "export") and not Path(args.adapter).is_dir():
        raise ModelError(f"{args.adapter}: adapter folder does not exist")
