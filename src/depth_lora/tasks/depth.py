"""The monocular task (`--task depth`): depth in mm from the image alone.

The model is Depth Anything V2 with its head (relative, or metric with `--head metric`); it learns
the camera's depth as labels (a LabelScheme over the training depths) with the recipe's loss, and
is scored against the zero-shot model calibrated on the training captures.
"""

from __future__ import annotations

from depth_lora.errors import ConfigError
from depth_lora.runs.task import Built, Task, TrainerParts

COMPLETION_OPTIONS = ("hole_kinds", "hidden_weight", "prompt_validity", "prompt_scale", "holes_max_pixels")


class DepthTask(Task):
    name = "depth"
    format_version = 1
    label_names = ("labels", "valid_mask")
    hole_row = "fine_tuned"

    # What a run builds, feeds and scores
    def check_options(self, cfg) -> None:
        given = [name for name in COMPLETION_OPTIONS if getattr(cfg, name) is not None]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} is an option of a completion run: add "
                              "--task complete")

    def check_config(self, cfg) -> None:
        lo, hi = cfg.label_percentiles if len(cfg.label_percentiles) == 2 else (None, None)
        if lo is None or not 0 <= lo < hi <= 100:
            raise ConfigError(f"--label-percentiles takes LO HI with 0 <= LO < HI <= 100, "
                              f"got {cfg.label_percentiles}")

    def describe(self, cfg, what: str) -> tuple[str, str]:
        lo, hi = cfg.label_percentiles
        return what, (f"{cfg.labels} labels (range: percentiles {lo:g}-{hi:g} of the training depths), "
                      f"{cfg.loss} loss")

    def loss(self, cfg):
        from depth_lora.training.losses import build_loss

        return build_loss(cfg.loss)

    def build(self, cfg, data, stages, precision: str, progress: bool) -> Built:
        from depth_lora.data.dataset import LabelScheme, depth_range_mm
        from depth_lora.model.checkpoints import build_model
        from depth_lora.training.run import calibrate_zero_shot
        from depth_lora.training.setup import resolve_head

        model, model_info = build_model(cfg.model, seed=cfg.seed)
        with stages.stage("calibration"):  # every process its share of the captures, on its device
            calibration = calibrate_zero_shot(model.to(stages.device), data, precision, progress)
        head = resolve_head(cfg, model)  # after the calibration: zero-shot is the checkpoint as published
        labels = LabelScheme(cfg.labels, *depth_range_mm(data.prepared["train"], cfg.label_percentiles))
        return Built(model, model_info, head, labels, calibration)

    def ready(self, model, built: Built):
        return model

    def trainer_parts(self, cfg, data, built: Built, workers: int, progress: bool) -> TrainerParts:
        from depth_lora.data.dataset import DepthDataset
        from depth_lora.runs.folder import SCALE_INVARIANT_LOSSES
        from depth_lora.training.trainer import make_compute_metrics

        train, val = data.prepared["train"], data.prepared["val"]
        metrics = make_compute_metrics(built.labels, relative=cfg.loss in SCALE_INVARIANT_LOSSES)
        return TrainerParts(DepthDataset(train, built.labels), DepthDataset(val, built.labels), metrics,
                            {"panel_capture": val[0]})

    def score_held_out(self, cfg, output, device, precision: str, data, plots_dir):
        from depth_lora.training.held_out import evaluate_held_out, held_out_metrics

        reports = evaluate_held_out(cfg, output, device, precision, data, plots_dir)
        return reports, None, held_out_metrics(reports)

    # How its model is used
    def base_model(self, folder, record, as_published: bool = False):
        from depth_lora.model.checkpoints import build_model
        from depth_lora.model.heads import make_metric_head

        base_dir = record.base_model_dir
        model = build_model(str(folder / base_dir) if base_dir else record.base_model)[0]
        if record.head_type == "metric" and not as_published:
            make_metric_head(model, record.head.get("max_depth"))
        return model

    def labels(self, record):
        from depth_lora.data.dataset import LabelScheme

        return LabelScheme(**record.labels)

    def complete(self, bundle, rgb, depth_mm, name, measured):
        from depth_lora.inference.complete import border_safe_raw, complete_raw

        # A PyTorch ModelBundle or an exported model's (deploy.exported): both take any image size.
        raw = border_safe_raw(bundle.predict_raw, rgb, bundle.image_size_hw)
        return complete_raw(raw, depth_mm, bundle.labels, name, measured)

    def predict_one(self, bundle, capture: tuple):
        return bundle.predict_mm([capture[1]])[0]

    def export_settings(self, adapter_dir, record, quantize: str | None, images) -> dict | None:
        return None

    def export_graph(self, model, size_hw: tuple[int, int], settings: dict | None):
        from depth_lora.deploy.graph import image_graph

        return image_graph(model, size_hw)

    def export_readme(self, record, folder_name: str) -> str:
        from depth_lora.deploy.readme import depth_readme

        return depth_readme(record, folder_name)

    # How it is scored and described
    def hole_fillers(self, bundle):
        """The models run once per capture (they read the image only)."""
        from functools import partial

        from depth_lora.evaluation.holes import fill_all_methods
        from depth_lora.evaluation.report import predict_zero_shot_disparity, zero_shot_base
        from depth_lora.inference.complete import base_labels, border_safe_raw

        base = zero_shot_base(bundle)
        zero_shot_labels = base_labels(base if base is not None else bundle.model)
        size_hw = bundle.image_size_hw  # each model's output as `complete` computes it

        def for_capture(capture):
            raw = border_safe_raw(bundle.predict_raw, capture.rgb, size_hw)
            raw_zero_shot = border_safe_raw(partial(predict_zero_shot_disparity, bundle, base=base),
                                            capture.rgb, size_hw)
            return partial(fill_all_methods, rgb=capture.rgb, raw_fine_tuned=raw, raw_zero_shot=raw_zero_shot,
                           labels=bundle.labels, base_labels=zero_shot_labels)

        return for_capture

    def training_hole_kinds(self, record) -> list[str] | None:
        return None

    def evaluate(self, args, bundle, plots) -> int:
        from depth_lora.evaluation.report import (
            format_report_table,
            interpret_report,
            run_evaluation,
            write_report,
        )
        from depth_lora.evaluation.verdict import kept_checkpoint_line, plain_reading
        from depth_lora.runs.folder import read_metrics, read_split

        report = run_evaluation(args.data, args.adapter, args.split, plots_dir=plots, bundle=bundle,
                                tolerances_mm=tuple(args.tolerances_mm))
        print(format_report_table(report))
        if args.holes:
            from depth_lora.evaluation.holes import format_hole_table, run_hole_evaluation

            holes = run_hole_evaluation(args.data, args.adapter, args.split, plots_dir=plots,
                                        precision=args.precision, max_pixels=args.holes_max_pixels or None)
            print("\nFilling hidden holes (depth-lora complete), scored on the hidden pixels only:")
            print(format_hole_table(holes))
            report.holes = holes.to_dict()
        if args.split == "all":
            print(f"\n== What the table says\n{interpret_report(report)}\n"
                  "--split all includes the training captures: no verdict is drawn from it.")
        else:  # the verdict reads both held-out splits, whichever was asked for (as quickstart does)
            reports = {args.split: report}
            other = "val" if args.split == "test" else "test"
            if (read_split(args.adapter) or {}).get(other):
                reports[other] = run_evaluation(args.data, args.adapter, other, progress=False, bundle=bundle,
                                                tolerances_mm=tuple(args.tolerances_mm))
            val = (read_metrics(args.adapter) or {}).get("val")
            kept = kept_checkpoint_line(val) if val else None
            reading = plain_reading(reports.get("test"), reports.get("val"), kept, shown=report)
            print(f"\n== What the table says\n{reading}")
        for path in write_report(report, args.json, args.csv):
            print(f"written: {path}")
        return 0

    def card_intro(self, record) -> list[str]:
        labels, (h, w) = record.labels, record.image_size_hw or ("?", "?")
        return [
            f"Depth Anything V2 (`{record.base_model}`) adapted to one camera's captures with "
            f"depth-lora: single RGB image in, depth in **millimetres** out.",
            "", "## Training", "",
            f"- Base model: `{record.base_model}`"
            + (" (random init, saved in `base_model/`)" if record.base_model_dir else ""),
            f"- Recipe: {record.recipe_line or record.recipe}",
            f"- Labels: {labels.get('kind')} over {labels.get('depth_min_mm', 0):.0f}-"
            f"{labels.get('depth_max_mm', 0):.0f} mm; model input {h} x {w} (H x W)",
        ]

    def card_results(self, metrics: dict) -> list[str]:
        from depth_lora.runs.model_card import results_table

        test = metrics.get("test")
        lines = [f"On the test split, compared at {test.get('resolution', 'full resolution')}; "
                 "mean over captures with 95 % bootstrap intervals. `zero_shot_calibrated` is what the base "
                 "model does without fine-tuning (one scale and shift fitted on the training captures): "
                 "the row to beat. `*_aligned` rows are oracles (per-capture fit to the ground truth).", ""]
        lines += results_table(test)
        notes = test.get("notes") or []
        return lines + (["", *[f"- {n}" for n in notes]] if notes else [])

    def card_use(self, record, folder_name: str) -> list[str]:
        from depth_lora.runs.model_card import decode_rule

        return [
            "", "## Use it", "",
            "```python",
            "from depth_lora import load_bundle, predict_depth_mm  # pip install -e . in a depth-lora "
            "checkout",
            f'bundle = load_bundle("{folder_name}")  # this folder (e.g. from '
            "huggingface_hub.snapshot_download)",
            "depth_mm = predict_depth_mm(bundle, rgb)  # (H, W, 3) uint8 -> (H, W) float32 mm",
            "```",
            "",
            "From a shell: `depth-lora predict IMAGES --adapter THIS_FOLDER --out predictions`, and "
            "`depth-lora complete CAPTURES --adapter THIS_FOLDER --out completed` to fill a capture's holes.",
            f"The raw model output is a label: {decode_rule(record.labels)}.",
            "",
            "Publish this folder with `hf upload USER/NAME THIS_FOLDER`: the YAML header above is the hub's "
            "metadata.",
            "",
        ]

    def bench_trainer(self, prepared: list, model_name: str, args, gradient_checkpointing: bool):
        """A monocular Trainer as `bench` has always timed it: min-max labels, MSE, flips and jitter."""
        from depth_lora.data.dataset import DepthDataset, LabelScheme, depth_range_mm
        from depth_lora.data.transforms import JITTER_STRENGTH, BatchTransform
        from depth_lora.model.checkpoints import build_model
        from depth_lora.model.lora import apply_lora
        from depth_lora.training.losses import build_loss
        from depth_lora.training.trainer import DepthTrainer

        labels = LabelScheme("minmax", *depth_range_mm(prepared))
        model = apply_lora(build_model(model_name)[0], gradient_checkpointing=gradient_checkpointing)
        return DepthTrainer(model=model, args=args, train_dataset=DepthDataset(prepared, labels),
                            transform=BatchTransform(flip=True, jitter_strength=JITTER_STRENGTH),
                            loss_fn=build_loss("mse"), label_scheme=labels), {}

    def check_bench_phases(self, phases) -> None:
        pass  # every phase times a monocular model

    def refusal(self, folder, action: str) -> str:
        return (f"{folder}: a monocular run (--task depth), not a completion model, so it cannot {action}; "
                "train one with `depth-lora train --task complete`")
