"""`depth-lora bench`: our training and inference speed beside the original pipeline's, same run.

Each phase runs in its own spawned process so that its peak memory is its own (ru_maxrss).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainingArguments

from depth_lora.bench.steps import (
    StepTimer,
    data_fraction,
    loader_s_per_batch,
    summarize_steps,
)
from depth_lora.errors import ConfigError, DataError
from depth_lora.model.precision import resolve_device
from depth_lora.runs.task import task_of


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def machine() -> dict:
    """What the figures were measured on: the GPU, or the CPU with its vector features."""
    from depth_lora.model.precision import describe_cpu

    info = {"torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    else:
        info["device"] = f"CPU {describe_cpu()}, {torch.get_num_threads()} threads"
    return info


def _args(out: str, batch_size: int, steps: int, precision: str, compile_model: bool = False,
          **more) -> TrainingArguments:
    cuda = resolve_device().type == "cuda"
    return TrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=5e-5,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda, report_to=[],
        save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
        remove_unused_columns=False, dataloader_pin_memory=cuda, seed=0, torch_compile=compile_model,
        **more,
    )


def _lora_model(model_name: str, gradient_checkpointing: bool = False):
    from depth_lora.model.checkpoints import build_model
    from depth_lora.model.lora import apply_lora

    return apply_lora(build_model(model_name)[0], gradient_checkpointing=gradient_checkpointing)


def phase_ours(data_dir, model_name, size_hw, batch_size, steps, precision, out, gc=False,
               compile_model=False, task="depth") -> dict:
    """Our pipeline: captures prepared once at the model size (timed cold, then warm from the
    on-disk cache), uint8 batches transformed on the device, labels with their masks, DepthTrainer
    (with its DataLoader workers as `train` sets them). task "complete": a completion run's examples
    (the hole bank, timed) on a completer of the same architecture. Also the DataLoader alone."""
    import shutil

    from depth_lora.data.cache import ArrayCache
    from depth_lora.data.captures import find_captures
    from depth_lora.data.dataset import prepare_captures
    from depth_lora.training.setup import default_num_workers

    files = find_captures(data_dir)
    cache_dir = Path(out) / "prepared_cache"  # a fresh cache: the first pass is cold
    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    prepare_captures(files, size_hw, progress=False, cache=ArrayCache(cache_dir))  # decode, resize, store
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = prepare_captures(files, size_hw, progress=False, cache=ArrayCache(cache_dir))
    warm_s = time.perf_counter() - start
    shutil.rmtree(cache_dir, ignore_errors=True)
    workers = {"dataloader_num_workers": default_num_workers(resolve_device().type == "cuda")}
    args = _args(out, batch_size, steps, precision, compile_model, **workers)
    trainer, extra = task_of(task).bench_trainer(prepared, model_name, args, gc)
    timer = StepTimer(trainer.accelerator)
    trainer.add_callback(timer)
    trainer.train()
    summary = {**summarize_steps(timer, batch_size), "skipped_steps": timer.skipped}
    loader_s = loader_s_per_batch(trainer, max(2, steps - 1))
    return {**summary, **extra, "data_fraction": data_fraction(timer), "peak_rss_mb": peak_rss_mb(),
            "prepare_cold_s": cold_s, "prepare_warm_s": warm_s, "loader_s_per_batch": loader_s,
            "loader_share": loader_s / summary["step_s"]}


def phase_reference(data_dir, model_name, size_hw, batch_size, steps, precision, out, gc=False) -> dict:
    """The original pipeline (bench/reference_pipeline.py): decode + processor per access,
    labels interpolated per step, fp32 on CPU and fp16 on CUDA."""
    from depth_lora.bench.reference_pipeline import (
        ReferenceTrainer,
        ReferenceZividDataset,
        checkpoint_processor,
    )
    from depth_lora.data.captures import find_captures

    files = find_captures(data_dir)
    dataset = ReferenceZividDataset(
        [(f.image, f.depth) for f in files], 250.0, 4000.0, checkpoint_processor(min(size_hw))
    )
    timer = StepTimer()
    ref_precision = "fp16" if torch.cuda.is_available() else "fp32"
    trainer = ReferenceTrainer(
        model=_lora_model(model_name), args=_args(out, batch_size, steps, ref_precision),
        train_dataset=dataset, callbacks=[timer],
    )
    trainer.train()
    return {**summarize_steps(timer, batch_size), "precision": ref_precision, "peak_rss_mb": peak_rss_mb()}


def phase_model_only(data_dir, model_name, size_hw, batch_size, steps, precision, out, gc=False,
                     compile_model=False) -> dict:
    """Forward + backward + AdamW step on one pre-loaded batch: the bare model's speed."""
    device = resolve_device()
    model = _lora_model(model_name, gc).to(device, memory_format=torch.channels_last).train()  # as ours
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    x = torch.randn(batch_size, 3, *size_hw, device=device)
    y = torch.rand(batch_size, *size_hw, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = forward(pixel_values=x).predicted_depth
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    steady = sorted(times[1:] or times)
    return {"samples_per_s": batch_size / steady[len(steady) // 2], "first_step_s": times[0],
            "peak_rss_mb": peak_rss_mb()}


def phase_inference(data_dir, model_name, size_hw, batch_size, steps, precision, out, gc=False,
                    short_sides=(434, 364)) -> dict:
    """One full-resolution PNG in -> depth in mm at full resolution out, end to end, in every runtime
    installed and at the trained size and smaller ones (bench/runtimes.py), then the capture
    completed (`depth-lora complete`'s path), by the monocular fill and by a completion model
    (bench/completion.py)."""
    from depth_lora.bench.completion import completion_timing
    from depth_lora.bench.runtimes import CALIBRATION_IMAGES, runtime_table
    from depth_lora.data.captures import find_captures, load_depth_mm, load_rgb
    from depth_lora.data.dataset import LabelScheme

    device = resolve_device()
    model = _lora_model(model_name).to(device, memory_format=torch.channels_last).eval()
    labels = LabelScheme("minmax", 250.0, 4000.0)
    files = find_captures(data_dir)
    image, rgbs = files[0].image, [load_rgb(f.image) for f in files[:2]]
    calibration = [load_rgb(f.image) for f in files[:CALIBRATION_IMAGES]]
    depth_mm = load_depth_mm(files[0].depth)
    table = runtime_table(model, labels, tuple(size_hw), list(short_sides), image, depth_mm, rgbs,
                          calibration, precision, max(steps, 2) - 1)
    trained = {r["runtime"]: r for r in table["rows"]
               if r["size_hw"] == list(size_hw) and "s_per_capture" in r}
    torch_name = [name for name in trained if name.startswith("pytorch")][-1]  # the auto precision
    completer = completion_timing(model, labels, model_name, tuple(size_hw), image, depth_mm, precision,
                                  max(steps, 2) - 1)
    classical = _classical_seconds(rgbs[0], depth_mm, max(steps, 2) - 1)
    result = {"classical_s_per_capture": classical,
              "size_hw": list(load_rgb(image).shape[:2]), "precision": precision, "runtimes": table,
              "s_per_capture_fp32": trained["pytorch fp32"]["s_per_capture"],
              "s_per_capture": trained[torch_name]["s_per_capture"],
              "complete_s_per_capture": table["complete_s_per_capture"][torch_name]["s_per_capture"],
              "completer": completer}
    return {**result, "peak_rss_mb": peak_rss_mb()}


def _classical_seconds(rgb, depth_mm, repeats: int) -> float:
    """Median seconds of `complete --classical`'s fill of one capture (no model: the image-guided
    fill at numeric.guided_fill.FILL_MAX_PIXELS)."""
    from depth_lora.inference.complete import check_measured, classical_completion

    measured = check_measured(depth_mm)
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        classical_completion(rgb, depth_mm, measured)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _child(phase, args, kwargs, queue):
    torch.manual_seed(0)
    try:
        result = phase(*args, **kwargs)
        if torch.cuda.is_available():
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        queue.put(result)
    except Exception as exc:  # reported by the parent, with the phase's name
        queue.put({"error": f"{exc.__class__.__name__}: {exc}"})


PHASES = {"inference": phase_inference, "model_only": phase_model_only, "ours": phase_ours,
          "reference": phase_reference}  # in the order bench runs them


def run_phase(name: str, *args, **kwargs) -> dict:
    """Run one phase in a fresh spawned process and return its result dict."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(PHASES[name], args, kwargs, queue))
    proc.start()
    result = None
    while result is None:
        try:
            result = queue.get(timeout=5)
        except Exception:  # queue.Empty: still running, unless the process died (e.g. out of memory)
            if not proc.is_alive():
                result = {"error": f"the process ended with exit code {proc.exitcode} and no result"}
    proc.join()
    if "error" in result:
        raise ConfigError(f"bench phase {name!r} failed: {result['error']}")
    return result


def run_bench(data_dir, model_name="small-random", size_hw=(518, 840), batch_size=4, steps=6,
              precision="auto", out_dir="/tmp/depth_lora_bench", gradient_checkpointing=False,
              phases=tuple(PHASES), short_sides=(434, 364), compile_model=False, task="depth") -> dict:
    """The phases asked for (all by default) on the same captures, model and size; the report dict.
    compile_model: the training phases (ours, model_only) with torch.compile. task "complete": a
    completion run's training (ours) only: its examples, its loader against its steps."""
    from depth_lora.data.captures import find_captures
    from depth_lora.model.precision import resolve_precision

    if steps < 2:
        raise ConfigError("--steps must be >= 2 (the first step is excluded as warm-up)")
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise ConfigError(f"--phases: unknown {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    task_of(task).check_bench_phases(phases)
    files = find_captures(data_dir)
    if len(files) < batch_size and set(phases) - {"inference"}:
        raise DataError(data_dir, f"only {len(files)} captures, fewer than --batch-size {batch_size}")
    precision = resolve_precision(precision)
    args = (str(data_dir), model_name, tuple(size_hw), batch_size, steps, precision, str(out_dir),
            gradient_checkpointing)
    report = {"machine": machine(), "model": model_name, "image_size_hw": list(size_hw), "task": task,
              "compile": compile_model,
              "gradient_checkpointing": gradient_checkpointing, "phases": [p for p in PHASES if p in phases],
              "batch_size": batch_size, "steps": steps, "precision": precision, "captures": len(files)}
    for name in report["phases"]:
        print(f"bench: {name} ...", flush=True)
        extra = {"inference": {"short_sides": tuple(short_sides)},
                 "model_only": {"compile_model": compile_model},
                 "ours": {"compile_model": compile_model, "task": task}}.get(name, {})
        report[name] = run_phase(name, *args, **extra)
    report.update(summary(report))
    return report


def summary(report: dict) -> dict:
    """The headline figures of the phases that ran."""
    out = {}
    ours, ref, bare, inference = (report.get(p) for p in ("ours", "reference", "model_only", "inference"))
    if ours:
        out.update(train_samples_per_s=ours["samples_per_s"], data_fraction=ours["data_fraction"],
                   loader_share=ours["loader_share"], first_step_s=ours["first_step_s"],
                   prepare_cold_s=ours["prepare_cold_s"], prepare_warm_s=ours["prepare_warm_s"],
                   train_peak_rss_mb=ours["peak_rss_mb"])
    if ref:
        out["reference_samples_per_s"] = ref["samples_per_s"]
    if ours and ref:
        out["speedup_vs_reference"] = ours["samples_per_s"] / ref["samples_per_s"]
    if bare:
        out["model_only_samples_per_s"] = bare["samples_per_s"]
    if ours and bare:
        out["overhead"] = bare["samples_per_s"] / ours["samples_per_s"] - 1
    if inference:
        out.update(infer_s_per_capture=inference["s_per_capture"],
                   complete_s_per_capture=inference["complete_s_per_capture"],
                   classical_s_per_capture=inference["classical_s_per_capture"],
                   infer_peak_rss_mb=inference["peak_rss_mb"])
    return out


def format_bench(report: dict) -> str:
    """The report as the lines `depth-lora bench` prints (the phases that ran)."""
    from depth_lora.bench.completion import format_completion_timing
    from depth_lora.bench.runtimes import format_runtime_table

    m, r = report["machine"], report
    reference = r.get("reference") or {}
    lines = [
        f"machine: {m['device']} | torch {m['torch']} | precision {r['precision']}"
        + (f" (reference: {reference['precision']})" if reference else ""),
        f"model {r['model']}, {r['image_size_hw'][0]}x{r['image_size_hw'][1]}, batch {r['batch_size']}, "
        f"{r['steps']} steps (first excluded, median), gradient checkpointing "
        f"{'on' if r['gradient_checkpointing'] else 'off'}, torch.compile "
        f"{'on' if r.get('compile') else 'off'} (ours, bare model)"
        + f", task {r.get('task', 'depth')}",
    ]
    if "ours" in r:
        lines += [
            f"train_samples_per_s      {r['train_samples_per_s']:.3f}",
            f"first step               {r['first_step_s']:.2f} s (warm-up"
            + (", compilation)" if r.get("compile") else ")"),
            f"data_fraction            {100 * r['data_fraction']:.1f} % of a step waiting for data",
            f"skipped steps            {r['ours']['skipped_steps']} (inf/NaN gradients: the fp16 scaler's)",
            f"loader                   {r['ours']['loader_s_per_batch']:.3f} s to make a batch (one worker), "
            f"{100 * r['loader_share']:.1f} % of a step's time"
            + (f" (hole bank: {r['ours']['hole_draws']} draws a capture made once in "
               f"{r['ours']['hole_bank_s']:.1f} s)" if "hole_bank_s" in r["ours"] else ""),
            f"prepare captures         cold {r['prepare_cold_s']:.2f} s, warm {r['prepare_warm_s']:.2f} s "
            f"({r['captures']} captures decoded and resized, then read back from the on-disk cache)",
        ]
    if "reference" in r:
        lines.append(f"reference_samples_per_s  {r['reference_samples_per_s']:.3f}")
    if "speedup_vs_reference" in r:
        lines.append(f"speedup vs reference     {r['speedup_vs_reference']:.2f}x")
    if "model_only" in r:
        lines.append(f"model_only_samples_per_s {r['model_only_samples_per_s']:.3f}"
                     + (f" (overhead {100 * r['overhead']:.1f} %)" if "overhead" in r else ""))
    if "inference" in r:
        inference = r["inference"]
        h, w = inference["size_hw"]
        lines += [
            f"infer_s_per_capture      {r['infer_s_per_capture']:.3f} s ({h}x{w} PNG -> depth mm, PyTorch "
            f"{inference['precision']}; fp32 {inference['s_per_capture_fp32']:.3f} s)",
            f"complete_s_per_capture   {r['complete_s_per_capture']:.3f} s (PNG + depth file -> holes "
            f"filled: {r['complete_s_per_capture'] - r['infer_s_per_capture']:+.3f} s over inference)",
            f"classical_s_per_capture  {r['classical_s_per_capture']:.3f} s (complete --classical: no model, "
            f"the image-guided fill of the same capture's holes at {h}x{w})",
            *format_runtime_table(inference["runtimes"], (h, w)),
            *format_completion_timing(inference.get("completer", {})),
        ]
    memory = [f"{name} {r[phase]['peak_rss_mb']:.0f} MB" for name, phase in
              (("train", "ours"), ("inference phase (every runtime and export in one process)", "inference"),
               ("reference", "reference")) if phase in r]
    if memory:
        lines.append(f"peak RSS                 {', '.join(memory)}")
    if "peak_gpu_mb" in r.get("ours", {}):
        lines.append(f"peak GPU memory          train {r['ours']['peak_gpu_mb']:.0f} MB")
    return "\n".join(lines)


def write_bench_json(report: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
