"""The completion task (`--task complete`): the camera's depth with its holes filled, in mm.

The model is a Prompt Depth Anything completer: the image and a prompt made from the measured depth
in, depth in mm out (a residual over the prompt for a model started here from Depth Anything V2).
It learns from measured pixels hidden in the training captures (data.completion) with its own loss,
and is scored on hidden holes of the held-out captures against the classical fills.
"""

from __future__ import annotations

from depth_lora.errors import ConfigError
from depth_lora.runs.task import Built, Task, TrainerParts

DEPTH_OPTIONS = ("loss", "labels", "label_percentiles", "max_depth")


class CompletionTask(Task):
    name = "complete"
    format_version = 3  # depth-lora before completion runs would read one as a monocular run
    label_names = ("labels", "valid_mask", "hidden_mask")  # its metrics score the hidden pixels too
    hole_row = "completer"

    # What a run builds, feeds and scores
    def check_options(self, cfg) -> None:
        from depth_lora.data.completion import (
            HIDDEN_WEIGHT,
            PROMPT_SCALE,
            TRAINING_HOLE_KINDS,
            check_hole_kinds,
        )

        given = [name for name in DEPTH_OPTIONS if getattr(cfg, name) is not None]
        given += ["head"] if cfg.head != "checkpoint" else []
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} does not apply to --task complete: a "
                              "completion model outputs depth in the unit of the measured depth it reads "
                              "(mm), with its own loss")
        cfg.hole_kinds = list(check_hole_kinds(cfg.hole_kinds or TRAINING_HOLE_KINDS))
        cfg.hidden_weight = HIDDEN_WEIGHT if cfg.hidden_weight is None else float(cfg.hidden_weight)
        cfg.prompt_validity = bool(cfg.prompt_validity)
        if cfg.hidden_weight <= 0:
            raise ConfigError(f"--hidden-weight must be > 0, got {cfg.hidden_weight}")
        cfg.prompt_scale = PROMPT_SCALE if cfg.prompt_scale is None else float(cfg.prompt_scale)
        if not 0 < cfg.prompt_scale <= 1:
            raise ConfigError(f"--prompt-scale must be in (0, 1], got {cfg.prompt_scale}")
        if cfg.holes_max_pixels is not None and cfg.holes_max_pixels < 0:
            raise ConfigError(f"--holes-max-pixels must be >= 0 (0: full size), got {cfg.holes_max_pixels}")

    def check_config(self, cfg) -> None:
        pass  # check_options checked and filled in every option of its own

    def describe(self, cfg, what: str) -> tuple[str, str]:
        return ((f"completion model (Prompt Depth Anything), {what}, the prompt branches trained; holes "
                 f"hidden in training captures: {', '.join(cfg.hole_kinds)}, hidden pixels weighted "
                 f"{cfg.hidden_weight:g}x; prompt depth at {cfg.prompt_scale:g}x the input size"),
                "completion loss (squared error over the prompt's range)")

    def loss(self, cfg):
        from depth_lora.training.losses import CompletionLoss

        return CompletionLoss()

    def build(self, cfg, data, stages, precision: str, progress: bool) -> Built:
        """No labels and no zero-shot calibration: the prompt is the baseline."""
        from depth_lora.data.completion import HOLE_DRAWS
        from depth_lora.model.prompt import build_completer

        model, model_info = build_completer(cfg.model, seed=cfg.seed)
        converted = model_info.get("converted_from")
        # How its output becomes depth (a residual over the prompt for a model started here from Depth
        # Anything V2, Prompt Depth Anything's own output for a published prompt checkpoint), the
        # prompt's size, the training holes.
        settings = {"output": "residual" if converted else "direct", "converted_from": converted,
                    "prompt_scale": cfg.prompt_scale, "prompt_channels": 2 if cfg.prompt_validity else 1,
                    "hole_kinds": list(cfg.hole_kinds), "hidden_weight": cfg.hidden_weight,
                    "hole_draws": HOLE_DRAWS}
        head = {"type": "relative", "max_depth": model.config.max_depth, "converted": False}
        return Built(model, model_info, head, settings=settings)

    def ready(self, model, built: Built):
        from depth_lora.model.prompt import add_validity_channel, start_residual_head

        if built.settings["output"] == "residual":
            start_residual_head(model)
        if built.settings["prompt_channels"] == 2:
            add_validity_channel(model)
        return model

    def trainer_parts(self, cfg, data, built: Built, workers: int, progress: bool) -> TrainerParts:
        """Examples with hidden holes and a prompt (data.completion), scored on the hidden pixels of
        fixed validation holes; no panel (it needs a prompt)."""
        from depth_lora.data.completion import CompletionDataset
        from depth_lora.text import plural
        from depth_lora.training.trainer import make_completion_metrics

        settings, train, val = built.settings, data.prepared["train"], data.prepared["val"]
        holes = {"kinds": settings["hole_kinds"], "prompt_scale": settings["prompt_scale"],
                 "hidden_weight": settings["hidden_weight"], "seed": cfg.seed,
                 "prompt_channels": settings["prompt_channels"]}
        if progress:
            print(f"Drawing {settings['hole_draws']} holes and their prompts for each of "
                  f"{plural(len(train), 'training capture')}, once", flush=True)
        return TrainerParts(CompletionDataset(train, draws=settings["hole_draws"], workers=workers, **holes),
                            CompletionDataset(val, fixed=True, **holes), make_completion_metrics(),
                            {"completion_output": settings["output"]})

    def score_held_out(self, cfg, output, device, precision: str, data, plots_dir):
        from depth_lora.training.held_out import evaluate_holes_held_out, hole_metrics

        holes = evaluate_holes_held_out(cfg, output, device, precision, data, plots_dir)
        return {}, holes, hole_metrics(holes)

    # How its model is used
    def base_model(self, folder, record, as_published: bool = False):
        """The completer as training built it, its residual head started as in training."""
        from depth_lora.model.prompt import add_validity_channel, build_completer, start_residual_head

        base_dir = record.base_model_dir
        model = build_completer(str(folder / base_dir) if base_dir else record.base_model)[0]
        if (record.completion or {}).get("output") == "residual" and not as_published:
            start_residual_head(model)
        if (record.completion or {}).get("prompt_channels", 1) == 2:
            add_validity_channel(model)
        return model

    def labels(self, record):
        return None  # its output is depth in mm, given the measured depth

    def complete(self, bundle, rgb, depth_mm, name, measured):
        from depth_lora.inference.complete import complete_with_completer

        return complete_with_completer(bundle.predict_completion, rgb, depth_mm, bundle.image_size_hw,
                                       measured)

    def predict_one(self, bundle, capture: tuple):
        _, rgb, depth = capture
        return bundle.predict_completion(rgb, depth)

    def export_settings(self, adapter_dir, record, quantize: str | None, images) -> dict | None:
        if quantize:
            raise ConfigError(f"{adapter_dir}: a completion run (--task complete) is exported in fp32 only; "
                              "--quantize is for depth runs")
        if images:
            raise ConfigError(f"{adapter_dir}: a completion run is checked on captures with depth (the run's "
                              "test captures, or generated ones); --check-images gives images alone")
        return record.completion

    def export_graph(self, model, size_hw: tuple[int, int], settings: dict | None):
        from depth_lora.deploy.graph import prompt_graph

        return prompt_graph(model, size_hw, settings)

    def export_readme(self, record, folder_name: str) -> str:
        from depth_lora.deploy.readme import completion_readme

        return completion_readme(record, folder_name)

    # How it is scored and described
    def hole_fillers(self, bundle):
        """The completers read the depth, so they run once per hole; the base model (monocular, no
        prompt) once per capture."""
        from functools import partial

        import numpy as np

        from depth_lora.evaluation.holes import base_model_fills
        from depth_lora.inference.complete import border_safe_raw, completion_from_prediction
        from depth_lora.inference.predict import load_base_model, predict_completion, predict_raw

        record, size_hw, precision = bundle.record, bundle.image_size_hw, bundle.precision
        start = load_base_model(bundle.folder, record).to(bundle.device).eval()
        monocular = load_base_model(bundle.folder, record, as_published=True).to(bundle.device).eval()
        predict_start = partial(predict_completion, start, size_hw=size_hw, completion=record.completion,
                                precision=precision)

        def for_capture(capture):
            rgb = capture.rgb
            raw_zero_shot = border_safe_raw(
                lambda image: predict_raw(monocular, image, size_hw, precision).cpu().numpy(), rgb, size_hw)

            def fills(depth_mm):
                measured = np.isfinite(depth_mm)
                learned = border_safe_raw(bundle.predict_completion, rgb, size_hw, depth_mm)
                started = border_safe_raw(lambda image, depth: predict_start(rgb=image, depth_mm=depth), rgb,
                                          size_hw, depth_mm)
                return {
                    "completer": completion_from_prediction(learned, depth_mm, measured).depth_mm,
                    "completer_unanchored": completion_from_prediction(learned, depth_mm, measured,
                                                                       anchor=False).depth_mm,
                    "completer_start": completion_from_prediction(started, depth_mm, measured).depth_mm,
                    **base_model_fills(depth_mm, rgb, raw_zero_shot),
                }

            return fills

        return for_capture

    def training_hole_kinds(self, record) -> list[str] | None:
        return (record.completion or {}).get("hole_kinds")

    def evaluate(self, args, bundle, plots) -> int:
        """Scored on hidden holes (what --holes does for a monocular run: it needs the measured
        depth), with the verdict both held-out splits give."""
        from depth_lora.evaluation.holes import format_hole_table, run_hole_evaluation, write_hole_report
        from depth_lora.evaluation.verdict import completion_verdict
        from depth_lora.runs.folder import read_split

        print(f"{args.adapter}: a completion run, scored on hidden holes of the {args.split} split")
        max_pixels = args.holes_max_pixels or None
        holes = run_hole_evaluation(args.data, args.adapter, args.split, plots_dir=plots, bundle=bundle,
                                    max_pixels=max_pixels)
        print(format_hole_table(holes))
        reports, other = {args.split: holes}, "val" if args.split == "test" else "test"
        if args.split != "all" and (read_split(args.adapter) or {}).get(other):
            reports[other] = run_hole_evaluation(args.data, args.adapter, other, progress=False,
                                                 bundle=bundle, max_pixels=max_pixels)
        verdict = None
        if args.split != "all":
            verdict = completion_verdict(reports.get("test"), reports.get("val"))[1]
            print(f"\n== What the table says\n{verdict}")
        for path in write_hole_report(holes, args.json, args.csv, verdict):
            print(f"written: {path}")
        return 0

    def card_intro(self, record) -> list[str]:
        converted = (record.completion or {}).get("converted_from")
        h, w = record.image_size_hw or ("?", "?")
        return [
            "A completion model (Prompt Depth Anything"
            f"{f', started from `{converted}`' if converted else ''}) "
            "adapted to one camera's captures with depth-lora: an RGB image and the camera's measured depth "
            "in, the depth with its holes filled in **millimetres** out.",
            "", "## Training", "",
            f"- Base model: `{record.base_model}`"
            + (" (random init, saved in `base_model/`)" if record.base_model_dir else ""),
            f"- Recipe: {record.recipe_line or record.recipe}",
            f"- Model input {h} x {w} (H x W)",
        ]

    def card_results(self, metrics: dict) -> list[str]:
        from depth_lora.runs.model_card import results_table

        lines = ["Measured pixels of the test captures hidden (holes of several kinds), filled, and scored "
                 "on the hidden pixels only (`depth-lora evaluate --holes`), over all hole kinds; mean over "
                 "(capture, kind) pairs with 95 % bootstrap intervals. `harmonic` is the classical fill to "
                 "beat; metrics.json has each kind.", ""]
        return lines + results_table(metrics["test"])

    def card_use(self, record, folder_name: str) -> list[str]:
        return [
            "", "## Use it", "",
            "From a shell: `depth-lora complete CAPTURES --adapter THIS_FOLDER --out completed` fills each "
            "capture's holes; every measured pixel comes back unchanged. The model needs the measured depth, "
            "so `depth-lora predict` refuses it.", "",
        ]

    def bench_trainer(self, prepared: list, model_name: str, args, gradient_checkpointing: bool):
        """A completion run's Trainer as `train --task complete` builds it (its hole bank made here,
        timed), on a completer of `model_name`'s architecture."""
        import time

        from depth_lora.data.completion import CompletionDataset
        from depth_lora.data.transforms import JITTER_STRENGTH, BatchTransform
        from depth_lora.model.lora import apply_lora
        from depth_lora.model.prompt import build_completer, start_residual_head
        from depth_lora.training.losses import CompletionLoss
        from depth_lora.training.trainer import DepthTrainer

        start = time.perf_counter()
        dataset = CompletionDataset(prepared, workers=args.dataloader_num_workers)
        holes_s = time.perf_counter() - start
        completer = build_completer(model_name)[0]
        start_residual_head(completer)
        trainer = DepthTrainer(
            model=apply_lora(completer, train_head=True, gradient_checkpointing=gradient_checkpointing),
            args=args, train_dataset=dataset,
            transform=BatchTransform(flip=True, jitter_strength=JITTER_STRENGTH),
            loss_fn=CompletionLoss(), label_scheme=None,
        )
        return trainer, {"hole_bank_s": holes_s, "hole_draws": dataset.draws}

    def check_bench_phases(self, phases) -> None:
        if set(phases) != {"ours"}:
            raise ConfigError("bench --task complete measures a completion run's training only: add "
                              "--phases ours (inference times the completer already: --phases inference "
                              "without --task)")

    def refusal(self, folder, action: str) -> str:
        return (f"{folder}: a completion run (--task complete), which needs the camera's depth as well as "
                f"the image, so it cannot {action}; use `depth-lora complete --adapter {folder} CAPTURES "
                "--out DIR`")
