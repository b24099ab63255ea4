"""The domain-adaptation experiment: does fine-tuning adapt a pretrained depth model to a camera, which
placement of LoRA does it best, and how many captures does it take? One command:
`python experiments/domain_adaptation/run.py --out DIR` (about 75 minutes on 2 AVX2 cores with `--pretrained
demo-pretrained`, plus the pretraining without it: 22 minutes on a bf16 CPU; `--quick`,
every step at toy size, about 2 minutes). Every choice is made on the validation split; the test split is
scored once, at the end.

1. Data. Source: generated rooms and tabletops (`source_scenes.py`). Target: Zivid-like bin-picking
   captures at 240x388 (`synthetic.generate_demo_captures`: sessions of 2-4 captures of one cell
   and camera pose). One split, grouped by session and seeded, for every method and seed
   (`target_split.json`: about 70 train, 15 validation, 45 test; no session in two splits). The
   training runs get it with the test list emptied (`trainval_split.json`, passed with `split=`),
   so no training run loads a test capture; the test captures are scored from `target_test/`
   (links to them) by `evaluate.run_evaluation`.
2. Pretraining: the `tiny` architecture from scratch, every weight, on the source scenes, with the
   scale-and-shift-invariant loss on inverse depth: how the shipped `demo-pretrained` was made.
3. Selection, validation only, on every selection seed (0 and 1), each run `adapt_steps` steps
   with a 10 % warm-up, keeping its checkpoint of lowest validation RMSE (that is its number of
   steps); the rules are selection.py's: a setting is ranked by its mean validation RMSE over the
   seeds, and its runs that diverged (validation RMSE above twice the best so far) are counted:
   a. labels (inverse vs min-max) and loss (MSE vs SiLog) for the recommended placement at the
      grid's rate nearest the recipe's; the best of the three goes to every method below;
   b. every method over the same learning-rate grid, extended one step of the 1-2-5 ladder on the
      side of a choice at its edge before that choice is accepted.
   Every run's validation numbers are rows of results.json (`stage: selection`) and of the
   selection table.
4. Final: each method at its chosen rate, one run per seed (the selection seeds' runs are the
   selection runs), scored once on the test split: fine_tuned and fine_tuned_aligned per method;
   zero_shot_calibrated, zero_shot_aligned (an oracle) and constant (the same for every run: one
   base model, one split). Each run that diverged in training is marked in the tables.
   Table: mean over seeds with two 95 % intervals: over test captures (bootstrap of each capture's
   seed-mean value) and over seeds (t interval; wide with 3 seeds).
5. Learning curve ("how many captures do I need?"): the recommended placement and full
   fine-tuning at 10, 20, 40 and all (70) training captures (nested subsets of the training split,
   whole sessions first), chosen settings, seed 0, test RMSE; zero_shot_calibrated is fitted on
   the same subset. Figure learning_curve_captures.png.
6. Structure: does a prediction follow the scene or only its distance? `structure_scores` of every
   method on the test captures; of the zero-shot model at several input sizes, beside what each
   input size can carry at all (the target resized to it and back). predictions.png: every method
   on the test capture of median error of the recommended placement.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from selection import choose_rate, diverged, rank_key, setting_summary

from depth_lora.errors import DataError, ModelError
from depth_lora.evaluation.report import HEADLINE
from depth_lora.training.config import RECIPES, TrainConfig


@dataclass(frozen=True)
class Budget:
    """Sizes and steps of one experiment run (full: ~75 min on 2 AVX2 cores; quick: ~2 min)."""

    source_count: int
    target_count: int
    pretrain_steps: int
    adapt_steps: int
    learning_rates: tuple[float, ...]  # the grid every method gets
    seeds: tuple[int, ...]  # the final stage's seeds
    selection_seeds: tuple[int, ...]  # the seeds every setting is judged on (the first final seeds)
    curve_captures: tuple[int, ...]  # learning-curve sizes below the whole training split
    evaluations: int  # validations (and checkpoints) per adaptation run: the steps it can choose


FULL = Budget(source_count=400, target_count=130, pretrain_steps=2500, adapt_steps=400,
              learning_rates=(5e-4, 1e-3, 2e-3, 5e-3), seeds=(0, 1, 2), selection_seeds=(0, 1),
              curve_captures=(10, 20, 40),
              evaluations=10)
QUICK = Budget(source_count=40, target_count=24, pretrain_steps=30, adapt_steps=20,
               learning_rates=(1e-3, 5e-3), seeds=(0, 1), selection_seeds=(0, 1), curve_captures=(6,),
               evaluations=4)
SOURCE_SIZE_HW, TARGET_SIZE_HW = (240, 320), (240, 388)
PRETRAIN_INPUT, TARGET_INPUT = [168, 224], [126, 196]
# 130 captures in sessions of 2-4: 70 train / 15 validation / 45 test at seed 0.
TARGET_VAL_FRACTION, TARGET_TEST_FRACTION, SPLIT_SEED = 0.115, 0.34, 0

# method -> TrainConfig overrides of the `recommended` recipe (LoRA r16, alpha 32, dropout 0.05 on
# q/k/v, attention output, MLP and the DPT neck, head trained; warm-up 10 %; label range from the
# 0.5-99.5 percentiles). "model" None: the experiment's pretrained model.
METHODS = {
    "lora_qkv": {"lora_targets": ["qkv"], "train_head": False},  # the original project's placement
    "lora_qkv_head": {"lora_targets": ["qkv"], "train_head": True},
    "recommended": {},
    "full_finetune": {"finetune": "full"},
    "scratch": {"finetune": "full", "model": "tiny"},  # no pretraining: the target captures alone
}
# Labels and loss, compared on validation for the recommended placement; the first is the recipe's.
VARIANTS = {
    "inverse_mse": {"labels": "inverse", "loss": "mse"},
    "minmax_mse": {"labels": "minmax", "loss": "mse"},
    "inverse_silog": {"labels": "inverse", "loss": "silog"},
}
VARIANT_METHOD = "recommended"
CURVE_METHODS = ("recommended", "full_finetune")
BASELINES = ("zero_shot_calibrated", "zero_shot_aligned", "constant")
# Structure: input sizes the zero-shot model is probed at, and the low-pass removed for detail.
PROBE_INPUTS = ([126, 196], [168, 266], [238, 378])
FLAT_MM = 1e-6  # a map varying less than this (std, mm) is flat: its structure score is 0
DETAIL_LOWPASS_PX = 15  # at 240x388: about one 14-px patch of a 126x196 input, a part's size at 1 m


def pretrain(source_dir: Path, out_dir: Path, budget: Budget) -> Path:
    """Pretrain `tiny` from scratch on the source scenes (SSI loss on inverse depth, no warm-up, the
    plain min/max label range: demo-pretrained's settings); returns the model folder, loadable by
    AutoModelForDepthEstimation.from_pretrained and `--model FOLDER`."""
    from depth_lora.training.run import run_training

    cfg = TrainConfig(
        data=str(source_dir), output=str(out_dir), model="tiny", finetune="full", labels="inverse",
        loss="ssi", max_steps=budget.pretrain_steps, batch_size=8, learning_rate=1e-3, warmup_steps=0,
        label_percentiles=[0, 100], image_size=PRETRAIN_INPUT, color_jitter=False, logging_steps=50,
        save_total_limit=1,
    )
    run_training(cfg, progress=False)
    check_saved_model_is_best(out_dir)
    return out_dir


def check_saved_model_is_best(run_dir: Path) -> None:
    """Refuse a run whose saved weights (whole model or adapter) are not its best checkpoint's: every
    number of the run (its validation RMSE, its chosen steps) describes that checkpoint. ModelError
    if not (measured with transformers 5.24: a full fine-tune reloaded at the end of training kept
    the last step's attention projections, saved under their legacy names)."""
    from safetensors.torch import load_file

    from depth_lora.runs.folder import read_record

    record = read_record(run_dir)
    if not record.best_checkpoint:
        return
    weights = "model.safetensors" if record.finetune == "full" else "adapter_model.safetensors"
    saved, best = (load_file(Path(folder) / weights) for folder in (run_dir, record.best_checkpoint))
    differ = [k for k, v in saved.items() if k not in best or not torch.equal(v, best[k])]
    if differ:
        raise ModelError(
            f"{run_dir}: the saved model is not its best checkpoint {record.best_checkpoint} ({len(differ)} "
            f"of {len(saved)} tensors differ, e.g. {differ[0]}): reloading the best checkpoint at the end of "
            "training lost them, so the run's validation numbers would not describe the saved model")


ROW_FILE = "experiment_row.json"  # a finished run's row, in its folder: what --resume reuses


def train_run(run_dir: Path, target_dir: Path, split_file: Path, pretrained: Path, budget: Budget,
              method: str, learning_rate: float, settings: dict, seed: int) -> dict:
    """Train one method (validation only: `split_file` has no test captures); returns its row. A
    folder holding a finished run's row (an interrupted experiment, resumed) is read, not retrained;
    one without (the run was stopped mid-training) is trained again from the start."""
    from depth_lora.training.run import run_training

    if (run_dir / ROW_FILE).is_file():
        return json.loads((run_dir / ROW_FILE).read_text())
    if run_dir.exists():
        say(f"{run_dir.name}: unfinished run of an earlier attempt, trained again")
        shutil.rmtree(run_dir)

    values = dict(
        data=str(target_dir), output=str(run_dir), recipe="recommended", seed=seed, split=str(split_file),
        model=str(pretrained.resolve()), max_steps=budget.adapt_steps, learning_rate=learning_rate,
        eval_steps=max(1, budget.adapt_steps // budget.evaluations), logging_steps=10, save_total_limit=1,
        image_size=TARGET_INPUT, color_jitter=False,  # brightness falloff shows distance: keep it
    )
    values.update(METHODS[method])
    values.update(settings)
    start = time.perf_counter()
    result = run_training(TrainConfig(**values), progress=False)
    check_saved_model_is_best(run_dir)
    val = {k: result.metrics["val"][k] for k in (*HEADLINE, "step") if k in result.metrics["val"]}
    curve = validation_curve(result.log_history)
    row = {
        "method": method, "seed": seed, "learning_rate": learning_rate, **settings,
        "run": str(run_dir.relative_to(run_dir.parents[1])),
        "train_seconds": round(time.perf_counter() - start, 1),
        "trainable_params": int(result.trainable_line.split("trainable params: ")[1].split(" ||")[0]
                                .replace(",", "")),
        "val": val, "val_curve": curve, "diverged": diverged(curve),
    }
    (run_dir / ROW_FILE).write_text(json.dumps(row, indent=2) + "\n")
    return row


def validation_curve(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, validation RMSE mm) at each evaluation of a training loop."""
    return [(e["step"], e["eval_rmse_mm"]) for e in log_history if "eval_rmse_mm" in e]


def score_on_test(row: dict, out_dir: Path, stage: str, **extra) -> dict:
    """Score a trained run once on the test captures (all five rows of `run_evaluation`); a run
    already scored (an interrupted experiment, resumed) is read back, not scored again."""
    from depth_lora.evaluation.report import run_evaluation

    scored = out_dir / row["run"] / f"experiment_test_{stage}.json"
    if scored.is_file():
        return json.loads(scored.read_text())

    # fp32: the committed results were scored so, and bf16 support differs between machines.
    report = run_evaluation(out_dir / "target_test", out_dir / row["run"], split="all", progress=False,
                            precision="fp32")
    per_capture = {}
    for entry in report.captures:
        per_capture.setdefault(entry["method"], {})[entry["capture"]] = {k: entry.get(k) for k in HEADLINE}
    keep = ("method", "seed", "learning_rate", "labels", "loss", "run", "train_seconds", "trainable_params",
            "diverged")
    scores = {
        "stage": stage, **{k: row[k] for k in keep}, **extra, "best_step": row["val"].get("step"),
        "val_rmse_mm": row["val"]["rmse_mm"],
        "test": {m: report.mean[m] for m in report.methods}, "test_per_capture": per_capture,
        "comparison": report.comparison,
    }
    scored.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def structure_scores(pred_mm: np.ndarray, target_mm: np.ndarray, lowpass_px: int = DETAIL_LOWPASS_PX) -> dict:
    """How much of a capture's shape a prediction follows, whatever its scale and offset.

    pred_mm, target_mm: (H, W) depth in mm, NaN where invalid. Returns {"corr": Pearson correlation
    of prediction and target over the valid pixels (each capture's mean removed: does the map
    follow the scene's depth at all), "detail_corr": the same after removing from both their
    `lowpass_px` x `lowpass_px` box mean over valid pixels (bin walls, parts, edges)}; None with
    fewer than 3 valid pixels. 1 is a perfect shape, 0 none (a constant map scores 0).
    """
    valid = np.isfinite(pred_mm) & np.isfinite(target_mm)
    if valid.sum() < 3:
        return None
    pred, target = np.where(valid, pred_mm, 0.0), np.where(valid, target_mm, 0.0)

    def lowpass(x):
        pool = dict(kernel_size=lowpass_px, stride=1, padding=lowpass_px // 2, count_include_pad=False)
        x_t, w_t = (torch.from_numpy(a.astype(np.float64))[None, None] for a in (x * valid, valid))
        return (F.avg_pool2d(x_t, **pool) / F.avg_pool2d(w_t, **pool).clamp(min=1e-9))[0, 0].numpy()

    def corr(a, b, mask):
        a, b = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
        if a.size < 3 or a.std() < FLAT_MM or b.std() < FLAT_MM:  # a flat map (to rounding): no shape
            return 0.0
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    # Detail away from the image border, where the box is cut and a plain slope would leave a residue.
    inner = np.zeros_like(valid)
    r = lowpass_px // 2
    inner[r:valid.shape[0] - r, r:valid.shape[1] - r] = True
    return {"corr": corr(pred, target, valid),
            "detail_corr": corr(pred - lowpass(pred), target - lowpass(target), valid & inner)}


def mean_structure(scores: list[dict | None]) -> dict:
    used = [s for s in scores if s is not None]
    return {k: float(np.mean([s[k] for s in used])) for k in ("corr", "detail_corr")} if used else {}


def nested_subsets(train_keys: list[str], groups: dict[str, str], sizes, seed: int) -> dict[int, list[str]]:
    """Training subsets of each size below len(train_keys), nested (10 within 20 within 40), made of
    whole sessions in a seeded order; only the last session of a subset may be cut to fit."""
    members: dict[str, list[str]] = {}
    for key in sorted(train_keys):
        members.setdefault(groups.get(key, key), []).append(key)
    order = sorted(members)
    np.random.default_rng(seed).shuffle(order)
    ordered = [k for g in order for k in members[g]]
    return {n: sorted(ordered[:n]) for n in sorted(sizes) if n < len(ordered)}


def _link_captures(files, out: Path) -> None:
    """`out/images`, `out/depth`: hard links to the given captures (a copy where links fail)."""
    for f in files:
        for src in (f.image, f.depth):
            dst = out / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


def run_experiment(out_dir: str | Path, quick: bool = False, resume: bool = False,
                   pretrained_from: str | Path | None = None) -> dict:
    """The whole experiment into `out_dir` (data, models, results.json, table.md, figures).

    After each stage, results.json and table.md hold what is finished (`finished_stages`), so a long
    run's stages can be read and kept as they end. resume: continue an interrupted experiment in the
    same folder; every finished run (its row file) is reused, an unfinished one trained again.
    pretrained_from: a model folder made by an earlier run's pretraining stage (the shipped
    `demo-pretrained` is one), copied instead of pretraining again (recorded in results.json).
    """
    budget = QUICK if quick else FULL
    out_dir = Path(out_dir)
    state = _start_state(out_dir, budget, resume)
    clock = [time.perf_counter()]

    def finish(stage: str) -> None:  # a resumed stage is timed from the resumption
        now = time.perf_counter()
        if stage not in state["finished_stages"]:
            state["stage_seconds"][stage] = round(now - clock[0], 1)
            state["finished_stages"].append(stage)
        clock[0] = now
        write_results(out_dir, state)

    split, groups, sessions, trainval = _data_stage(out_dir, budget, done="data" in state["finished_stages"])
    state.update(split={name: len(keys) for name, keys in split.items()},
                 sessions={name: len(g) for name, g in sessions.items()})
    finish("data")

    if "pretrain" not in state["finished_stages"]:
        if pretrained_from is not None:
            copy_pretrained(Path(pretrained_from), out_dir / "pretrained")
            state["pretrained_from"] = str(pretrained_from)
        else:
            pretrain(out_dir / "source", out_dir / "pretrained", budget)
    finish("pretrain")

    run_args = dict(target_dir=out_dir / "target", pretrained=out_dir / "pretrained", budget=budget,
                    split_file=trainval)
    selection = Selection(out_dir / "runs", run_args, budget.selection_seeds)
    state.update(selection.run(budget))
    state["rows"] = list(selection.rows.values())
    finish("selection")

    final = final_stage(selection, state["chosen"], state["variant"], budget, out_dir)
    state.update(rows=[*selection.rows.values(), *final], summary=summarize(final), targets=targets(final))
    finish("final")

    curve = curve_stage(out_dir, split, groups, final, state, budget, run_args)
    state.update(rows=[*selection.rows.values(), *final, *curve], curve=curve_points(curve))
    finish("curve")

    state["structure"] = measure_structure(out_dir, final)
    finish("structure")
    write_figures(out_dir, state)
    return state


def _start_state(out_dir: Path, budget: Budget, resume: bool) -> dict:
    """A new experiment's record, or (resume) the interrupted one's, after checking it can go on."""
    results_file = out_dir / "results.json"
    if not resume:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise DataError(out_dir, "is not empty (an earlier experiment?): choose a new folder, or pass "
                            "--resume to continue the experiment in it")
        return {"protocol": __doc__.split("\n\n", 1)[1].strip(), "budget": budget_record(budget),
                "target_input_hw": TARGET_INPUT, "finished_stages": [], "stage_seconds": {}, "resumed": 0,
                "structure": {}, "curve": {}}
    if not results_file.is_file():
        raise DataError(out_dir, "holds no results.json to resume: start the experiment without --resume")
    state = json.loads(results_file.read_text())
    if state["budget"] != budget_record(budget):
        raise DataError(results_file, "was made with another budget (--quick or not): resume it the same way")
    if "structure" in state["finished_stages"]:
        raise DataError(out_dir, "holds a finished experiment: choose a new folder")
    state["resumed"] += 1
    say(f"resuming after: {', '.join(state['finished_stages']) or 'nothing'}")
    return state


def write_results(out_dir: Path, state: dict) -> None:
    """results.json and table.md as the finished stages leave them."""
    state["seconds"] = round(sum(state["stage_seconds"].values()), 1)
    (out_dir / "results.json").write_text(json.dumps(state, indent=2) + "\n")
    tables = format_table(state.get("rows", []), state.get("chosen"), state.get("targets"))
    if state.get("structure"):
        tables += "\n\n" + format_structure(state["structure"])
    (out_dir / "table.md").write_text(tables + "\n")


def budget_record(budget: Budget) -> dict:
    """A budget as results.json holds it (lists, not tuples): what a later step compares with."""
    return json.loads(json.dumps(asdict(budget)))


def finished_results(out_dir: Path) -> tuple[dict, Budget]:
    """(results.json, its budget) of an experiment folder, for a follow-up that reuses it (heads,
    completion); DataError when the main experiment has not run there."""
    results_file = out_dir / "results.json"
    if not results_file.is_file():
        raise DataError(out_dir, "no results.json: run `python experiments/domain_adaptation/run.py "
                        "--out DIR` first")
    results = json.loads(results_file.read_text())
    return results, FULL if results["budget"] == budget_record(FULL) else QUICK  # --quick: a smoke test


def _data_stage(out_dir: Path, budget: Budget, done: bool):
    """Source scenes, target captures and the one session-grouped split (recomputed when resuming:
    it is seeded); returns (split, groups, each split's sessions, trainval split file)."""
    from source_scenes import generate_source_scenes

    from depth_lora.data.captures import find_captures
    from depth_lora.data.split import group_captures, make_split, save_split, split_groups
    from depth_lora.synthetic.demo import generate_demo_captures

    source, target = out_dir / "source", out_dir / "target"
    if not done:
        generate_source_scenes(source, budget.source_count, seed=100, size_hw=SOURCE_SIZE_HW)
        generate_demo_captures(target, budget.target_count, seed=200, size_hw=TARGET_SIZE_HW,
                               cells=budget.target_count)  # many cells, as when it was run
    files = find_captures(target)
    groups = group_captures([f.key for f in files], "session")
    split = make_split([f.key for f in files], TARGET_VAL_FRACTION, TARGET_TEST_FRACTION, SPLIT_SEED, groups)
    sessions = split_groups(split, groups)
    trainval = out_dir / "trainval_split.json"
    if not done:
        save_split(split, out_dir / "target_split.json", seed=SPLIT_SEED, data=str(target),
                   group_by="session", split_groups=sessions)
        save_split({**split, "test": []}, trainval,
                   note="target_split.json without its test captures: what every training run sees")
        _link_captures([f for f in files if f.key in set(split["test"])], out_dir / "target_test")
    return split, groups, sessions, trainval


def copy_pretrained(folder: Path, out: Path) -> None:
    """An earlier pretraining stage's model (config.json + model.safetensors) as this run's."""
    from depth_lora.model.choices import BUNDLED_MODELS

    folder = BUNDLED_MODELS.get(str(folder), folder)
    missing = [name for name in ("config.json", "model.safetensors") if not (folder / name).is_file()]
    if missing:
        raise DataError(folder, f"is not a pretrained model folder: no {', '.join(missing)}")
    out.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(folder / name, out / name)
    say(f"pretraining not run: the model of {folder} is this experiment's pretrained model")


class Selection:
    """Step 3: every setting trained on every selection seed, validation only (selection.py's rules)."""

    def __init__(self, runs: Path, run_args: dict, seeds) -> None:
        self.runs, self.run_args, self.seeds = runs, run_args, tuple(seeds)
        self.rows: dict[str, dict] = {}  # run name -> row, in the order trained

    def row(self, method: str, learning_rate: float, variant: str, seed: int) -> dict:
        name = f"{method}_lr{learning_rate:g}_{variant}_s{seed}"
        if name not in self.rows:
            row = train_run(self.runs / name, method=method, learning_rate=learning_rate,
                            settings=VARIANTS[variant], seed=seed, **self.run_args)
            self.rows[name] = {"stage": "selection", "variant": variant, **row}
            note = " DIVERGED" if row["diverged"] else ""
            say(f"selection {name}: validation RMSE {row['val']['rmse_mm']:.1f} mm at step "
                f"{row['val'].get('step')}{note} ({row['train_seconds']:.0f} s)")
        return self.rows[name]

    def run(self, budget: Budget) -> dict:
        """Labels and loss first (the recommended placement at the grid's rate nearest the
        recipe's), then each method's rate; returns {"variant", "variants", "chosen"}."""
        recipe_lr = RECIPES["recommended"]["learning_rate"]
        base_lr = min(budget.learning_rates, key=lambda lr: abs(np.log(lr / recipe_lr)))
        variants = {v: setting_summary([self.row(VARIANT_METHOD, base_lr, v, s) for s in self.seeds])
                    for v in VARIANTS}
        variant = min(VARIANTS, key=lambda v: rank_key(variants[v]))
        chosen = {}
        for method in METHODS:
            choice = choose_rate(lambda lr, seed, m=method: self.row(m, lr, variant, seed),
                                 budget.learning_rates, self.seeds)
            lr = choice["learning_rate"]
            runs = {seed: self.row(method, lr, variant, seed) for seed in self.seeds}
            kept = choice["tried"][lr]
            chosen[method] = {
                "learning_rate": lr, **VARIANTS[variant], "run": runs[self.seeds[0]]["run"],
                "runs": {str(s): r["run"] for s, r in runs.items()},
                "best_step": runs[self.seeds[0]]["val"].get("step"), **kept,
                "extended": choice["extended"], "at_edge": choice["at_edge"],
                "tried": {f"{rate:g}": summary for rate, summary in sorted(choice["tried"].items())}}
            edge = ", at the edge of its grid" if choice["at_edge"] else ""
            say(f"chosen for {method}: lr {lr:g}, validation RMSE {kept['val_rmse_mm']:.1f} mm "
                f"(mean of {len(self.seeds)} seeds{edge})")
        return {"variant": variant, "variants": variants, "chosen": chosen}


def final_stage(selection: Selection, chosen: dict, variant: str, budget: Budget,
                out_dir: Path) -> list[dict]:
    """Step 4: every method at its chosen settings, each seed scored once on the test captures."""
    final = []
    for method, choice in chosen.items():
        lr = choice["learning_rate"]
        for seed in budget.seeds:
            reused = seed in selection.seeds
            if reused:
                row = selection.row(method, lr, variant, seed)
            else:
                row = train_run(selection.runs / f"{method}_lr{lr:g}_{variant}_s{seed}", method=method,
                                seed=seed, learning_rate=lr, settings=VARIANTS[variant], **selection.run_args)
            final.append(score_on_test(row, out_dir, "final", reused_selection_run=reused))
            say(f"final {method} seed {seed}: test RMSE {final[-1]['test']['fine_tuned']['rmse_mm']:.1f} mm"
                f"{' (DIVERGED in training)' if row['diverged'] else ''}")
    return final


def curve_stage(out_dir: Path, split: dict, groups: dict, final: list[dict], state: dict, budget: Budget,
                run_args: dict) -> list[dict]:
    """Step 5: nested subsets of the training split, seed 0; the whole split is the final run."""
    from depth_lora.data.split import save_split

    subsets = nested_subsets(split["train"], groups, budget.curve_captures, SPLIT_SEED)
    curve = []
    variant = state["variant"]
    for n, keys in subsets.items():
        subset_file = save_split({**split, "train": keys, "test": []}, out_dir / f"trainval_split_n{n}.json",
                                 note=f"{n} training captures of trainval_split.json (whole sessions first)")
        for method in CURVE_METHODS:
            row = train_run(out_dir / "runs" / f"{method}_n{n}_s0", **{**run_args, "split_file": subset_file},
                            method=method, seed=0, learning_rate=state["chosen"][method]["learning_rate"],
                            settings=VARIANTS[variant])
            curve.append(score_on_test(row, out_dir, "curve", train_captures=n))
            rmse = curve[-1]["test"]["fine_tuned"]["rmse_mm"]
            say(f"curve {method}, {n} captures: test RMSE {rmse:.1f} mm")
    for row in final:
        if row["method"] in CURVE_METHODS and row["seed"] == 0:
            curve.append({**row, "stage": "curve", "train_captures": len(split["train"])})
    return curve


def targets(final: list[dict]) -> dict:
    """The steadiness targets, measured on the test split: `recommended`'s mean test RMSE over
    `full_finetune`'s (target: at most 1.1), each method's worst seed over its median seed (target:
    at most 1.3), and how many final runs diverged in training."""
    per_method: dict[str, list[float]] = {}
    for r in final:
        per_method.setdefault(r["method"], []).append(r["test"]["fine_tuned"]["rmse_mm"])
    out = {"worst_seed_over_median": {m: float(max(v) / np.median(v)) for m, v in per_method.items()},
           "diverged_runs": {m: sum(bool(r.get("diverged")) for r in final if r["method"] == m)
                             for m in per_method}}
    if {"recommended", "full_finetune"} <= set(per_method):
        out["recommended_over_full_finetune"] = float(np.mean(per_method["recommended"])
                                                      / np.mean(per_method["full_finetune"]))
    return out


def say(text: str) -> None:
    print(f"experiment: {text}", flush=True)


def measure_structure(out_dir: Path, final: list[dict]) -> dict:
    """`structure_scores` on the test captures: each method's seed-0 model at the experiment's
    input size, and the zero-shot model (oracle-aligned per capture) at each of PROBE_INPUTS beside
    the resolution ceiling (the target itself resized to that input size and back, bilinear), and
    the image's darkness taken as depth (no model: how much shape the plainest cue holds)."""
    from depth_lora.data.captures import find_captures, load_capture
    from depth_lora.data.dataset import resize_depth
    from depth_lora.inference.predict import load_bundle, predict_depth_mm, predict_raw
    from depth_lora.model.checkpoints import build_model
    from depth_lora.numeric.align import align_disparity_to_depth_mm

    captures = [load_capture(f) for f in find_captures(out_dir / "target_test")]
    # No model at all: the image's darkness as depth (the projector's light falls off with distance).
    brightness = mean_structure([structure_scores(-c.rgb.astype(np.float32).mean(axis=2), c.depth_mm)
                                 for c in captures])
    methods = {}
    for row in (r for r in final if r["seed"] == 0):
        bundle = load_bundle(out_dir / row["run"], "cpu", precision="fp32")
        methods[row["method"]] = mean_structure(
            [structure_scores(predict_depth_mm(bundle, c.rgb), c.depth_mm) for c in captures])
    base = build_model(str(out_dir / "pretrained"))[0].eval()
    zero_shot, ceiling = {}, {}
    for size in PROBE_INPUTS:
        scores, ceil, rmse = [], [], []
        for c in captures:
            aligned = align_disparity_to_depth_mm(predict_raw(base, c.rgb, tuple(size)).numpy(), c.depth_mm,
                                                  c.valid_mask, 100.0, 10_000.0)
            scores.append(structure_scores(aligned, c.depth_mm))
            rmse.append(float(np.sqrt(np.mean((aligned - c.depth_mm)[c.valid_mask] ** 2))))
            small, small_valid = resize_depth(c.depth_mm, tuple(size))
            filled = torch.from_numpy(np.where(small_valid, small, np.nanmean(small)))[None, None]
            back = F.interpolate(filled, size=c.depth_mm.shape, mode="bilinear", align_corners=False)[0, 0]
            ceil.append(structure_scores(back.numpy(), c.depth_mm))
        key = f"{size[0]}x{size[1]}"
        zero_shot[key] = {**mean_structure(scores), "rmse_mm": float(np.mean(rmse))}
        ceiling[key] = mean_structure(ceil)
    return {
        "captures": len(captures), "lowpass_px": DETAIL_LOWPASS_PX, "methods_seed0": methods,
        "image_darkness": brightness,
        "zero_shot_aligned_by_input": zero_shot, "resolution_ceiling_by_input": ceiling,
        "note": "corr: Pearson correlation of prediction and target over a capture's valid pixels "
                "(its mean removed), averaged over the test captures; detail_corr: the same after "
                f"removing a {DETAIL_LOWPASS_PX}-px box low-pass from both. A map that gets the "
                "distance right but shows no scene scores ~0.",
    }


def t_interval(values) -> list[float]:
    """95 % t interval of the mean of a few values (over seeds); one value: [v, v]."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return [float(values.mean()), float(values.mean())]
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return [float(values.mean() - half), float(values.mean() + half)]


def summarize_runs(runs: list[dict], row: str) -> dict:
    """Mean over runs (seeds) of one evaluation row's test metrics, with `<metric>_ci95_captures`
    (bootstrap over test captures of each capture's seed-mean value) and `<metric>_ci95_seeds`."""
    from depth_lora.numeric.metrics import bootstrap_ci95

    summary = {"seeds": len(runs)}
    for metric in HEADLINE:
        per_seed = [r["test"][row][metric] for r in runs]
        per_capture = [np.mean([r["test_per_capture"][row][c][metric] for r in runs])
                       for c in runs[0]["test_per_capture"][row]
                       if all(r["test_per_capture"][row][c][metric] is not None for r in runs)]
        summary.update({metric: float(np.mean(per_seed)),
                        f"{metric}_ci95_captures": bootstrap_ci95(per_capture),
                        f"{metric}_ci95_seeds": t_interval(per_seed)})
    summary["captures"] = len(runs[0]["test_per_capture"][row])
    return summary


def summarize(final: list[dict]) -> dict:
    """The final table's numbers: each method's fine_tuned and fine_tuned_aligned rows over seeds,
    and the baselines (the pretrained base's: the same for every seed; scratch's base is random)."""
    methods = list(dict.fromkeys(r["method"] for r in final))
    summary = {}
    for method in methods:
        runs = [r for r in final if r["method"] == method]
        summary[method] = summarize_runs(runs, "fine_tuned")
        summary[f"{method} (aligned)"] = summarize_runs(runs, "fine_tuned_aligned")
    reference = [r for r in final if r["method"] == "recommended"][:1] or final[:1]
    for baseline in BASELINES:
        if reference and baseline in reference[0]["test"]:
            summary[baseline] = summarize_runs(reference, baseline)
    return summary


def curve_points(curve: list[dict]) -> dict[str, list[list[float]]]:
    """method -> [[training captures, test RMSE mm, 95 % low, high (bootstrap over captures)]];
    zero_shot_calibrated and constant from the recommended runs (fitted on the same subsets)."""
    points: dict[str, list[list[float]]] = {name: [] for name in (*CURVE_METHODS, *BASELINES[:1], "constant")}
    for row in sorted(curve, key=lambda r: r["train_captures"]):
        names = [(row["method"], "fine_tuned")]
        if row["method"] == CURVE_METHODS[0]:
            names += [("zero_shot_calibrated", "zero_shot_calibrated"), ("constant", "constant")]
        for name, key in names:
            if key in row["test"]:
                m = row["test"][key]
                points[name].append([row["train_captures"], m["rmse_mm"], *m["rmse_mm_ci95"]])
    return {name: p for name, p in points.items() if p}


def _interval(values) -> str:
    return f"[{values[0]:.0f}, {values[1]:.0f}]"


def format_table(rows: list[dict], chosen: dict | None = None, measured_targets: dict | None = None) -> str:
    """Markdown: the selection table (validation, each setting over its seeds), the final table
    (test, mean over seeds with 95 % intervals over captures and over seeds, each seed's RMSE with
    diverged runs marked), the steadiness targets and the learning curve (test RMSE)."""
    selection = [r for r in rows if r["stage"] == "selection"]
    final = [r for r in rows if r["stage"] == "final"]
    kept = {(m, c["learning_rate"], c["labels"], c["loss"]) for m, c in (chosen or {}).items()}
    settings: dict[tuple, list[dict]] = {}
    for r in selection:
        settings.setdefault((r["method"], r["variant"], r["learning_rate"]), []).append(r)
    seeds = sorted({r["seed"] for r in selection})
    lines = [f"## Selection (validation split only, seeds {', '.join(map(str, seeds))})", "",
             "| method | labels, loss | lr | val RMSE mm, mean | per seed | diverged | best steps | "
             "trainable params | train s |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: |"]
    order = list(METHODS)
    for (method, _, lr), runs in sorted(settings.items(),
                                        key=lambda kv: (order.index(kv[0][0]), kv[0][1], kv[0][2])):
        summary, first = setting_summary(runs), runs[0]
        mark = "**" if (method, lr, first["labels"], first["loss"]) in kept else ""
        steps = ", ".join(str(r["val"].get("step")) for r in runs)
        lines.append(f"| {method} | {first['labels']}, {first['loss']} | {lr:g} | "
                     f"{mark}{summary['val_rmse_mm']:.1f}{mark} | {_per_seed(runs, lambda r: r['val'])} | "
                     f"{summary['diverged']} of {len(runs)} | {steps} | "
                     f"{first['trainable_params']:,} | {sum(r['train_seconds'] for r in runs):.0f} |")
    lines += ["", "Bold: the setting each method keeps (lowest mean validation RMSE over the seeds; a choice "
              "at the edge of the rates tried extends them one step first). Diverged (†): "
              "validation RMSE rose above twice its best so far in the run.", ""]
    if final:
        seeds = len({r["seed"] for r in final})
        lines += [f"## Test split ({final[0]['test']['fine_tuned']['captures']} captures, "
                  f"{seeds} seed{'s' if seeds > 1 else ''}, mean over seeds)", "",
                  "| row | trainable params | lr | best steps | RMSE mm | 95 % captures | 95 % seeds "
                  "| per seed | MAE mm | AbsRel | delta<1.25 |",
                  "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
        for name, s in summarize(final).items():
            method = name.split(" ")[0]
            key = "fine_tuned_aligned" if name.endswith("(aligned)") else "fine_tuned"
            runs = [r for r in final if r["method"] == method]
            params, lr, steps = (f"{runs[0]['trainable_params']:,}", f"{runs[0]['learning_rate']:g}",
                                 ", ".join(str(r["best_step"]) for r in runs)) if runs else ("0", "", "")
            per_seed = _per_seed(runs, lambda r, key=key: r["test"][key]) if runs else ""
            lines.append(f"| {name} | {params} | {lr} | {steps} | {s['rmse_mm']:.1f} | "
                         f"{_interval(s['rmse_mm_ci95_captures'])} | {_interval(s['rmse_mm_ci95_seeds'])} | "
                         f"{per_seed} | {s['mae_mm']:.1f} | {s['abs_rel']:.3f} | {s['delta1']:.3f} |")
        lines += ["", "95 % captures: bootstrap over the test captures of each capture's seed-mean value; "
                  "95 % seeds: t interval over the seeds' means. Baselines are the pretrained base's "
                  "(identical for every seed). '(aligned)': the oracle per-capture scale and shift. "
                  "†: the run diverged in training (its kept checkpoint is its best one).", ""]
    if measured_targets:
        ratio = measured_targets.get("recommended_over_full_finetune")
        worst = ", ".join(f"{m} {v:.2f}" for m, v in measured_targets["worst_seed_over_median"].items())
        lines += ["## Steadiness (test split)", "",
                  f"- `recommended` mean test RMSE / `full_finetune`'s: "
                  f"{'n/a' if ratio is None else f'{ratio:.2f}'} (target: at most 1.10)",
                  f"- worst seed / median seed, per method (target: at most 1.30): {worst}",
                  f"- final runs that diverged in training: "
                  f"{sum(measured_targets['diverged_runs'].values())} of {len(final)}", ""]
    points = curve_points([r for r in rows if r["stage"] == "curve"])
    if points:
        names = list(points)
        lines += ["## Learning curve (test RMSE mm [95 % over captures], seed 0)", "",
                  "| training captures | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
        for n in sorted({p[0] for v in points.values() for p in v}):
            cells = [next((f"{p[1]:.0f} [{p[2]:.0f}, {p[3]:.0f}]" for p in points[k] if p[0] == n), "")
                     for k in names]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_seed(runs: list[dict], metrics) -> str:
    """Each run's RMSE (`metrics(run)["rmse_mm"]`), a diverged run's marked †."""
    return ", ".join(f"{metrics(r)['rmse_mm']:.0f}{'†' if r.get('diverged') else ''}" for r in runs)


def format_structure(structure: dict) -> str:
    """Markdown table of the structure scores (see measure_structure)."""
    lines = ["## Structure (test captures: does the prediction show the scene?)", "",
             "| prediction | corr | detail corr |", "| --- | ---: | ---: |"]
    for method, s in structure["methods_seed0"].items():
        lines.append(f"| {method} (seed 0, input {TARGET_INPUT[0]}x{TARGET_INPUT[1]}) | {s['corr']:.3f} | "
                     f"{s['detail_corr']:.3f} |")
    s = structure["image_darkness"]
    lines.append(f"| image darkness as depth (no model) | {s['corr']:.3f} | {s['detail_corr']:.3f} |")
    for size, s in structure["zero_shot_aligned_by_input"].items():
        c = structure["resolution_ceiling_by_input"][size]
        lines.append(f"| zero-shot aligned, input {size} (RMSE {s['rmse_mm']:.0f} mm) | {s['corr']:.3f} | "
                     f"{s['detail_corr']:.3f} |")
        lines.append(f"| target resized to {size} and back (ceiling) | {c['corr']:.3f} | "
                     f"{c['detail_corr']:.3f} |")
    return "\n".join(lines + ["", structure["note"]])


def write_figures(out_dir: Path, results: dict) -> None:
    """learning_curves.png (validation RMSE against step of each method's chosen run, seed 0),
    learning_curve_captures.png, and predictions.png (every method, seed 0, on the test capture of
    median error of the recommended placement: a typical one, not the best)."""
    from figures import plot_capture_curve, plot_learning_curves

    from depth_lora.data.captures import find_captures, load_capture
    from depth_lora.evaluation.report import predict_all_methods
    from depth_lora.inference.predict import load_bundle, predict_depth_mm
    from depth_lora.viz import plot_depth_grid, save_figure

    rows = results["rows"]
    final0 = {r["method"]: r for r in rows if r["stage"] == "final" and r["seed"] == 0}
    curves = {m: next(s["val_curve"] for s in rows if s["stage"] == "selection" and s["run"] == r["run"])
              for m, r in final0.items()}
    save_figure(plot_learning_curves(curves, "validation RMSE of each method's chosen run (seed 0)"),
                out_dir / "learning_curves.png")
    points = dict(results["curve"])
    constant = points.pop("constant", [])
    references = {"constant (all training captures)": constant[-1][1]} if constant else None
    save_figure(plot_capture_curve(points, "How many captures? Test RMSE, seed 0, 95 % over captures",
                                   references), out_dir / "learning_curve_captures.png")
    per_capture = final0["recommended"]["test_per_capture"]["fine_tuned"]
    ranked = sorted((m["rmse_mm"], key) for key, m in per_capture.items() if m["rmse_mm"] is not None)
    key = ranked[len(ranked) // 2][1]
    capture = load_capture(next(f for f in find_captures(out_dir / "target_test") if f.key == key))
    bundles = {m: load_bundle(out_dir / r["run"], "cpu", precision="fp32") for m, r in final0.items()}
    baselines = predict_all_methods(bundles["recommended"], capture)
    preds = {"zero_shot_calibrated": baselines["zero_shot_calibrated"],
             "zero_shot_aligned (oracle)": baselines["zero_shot_aligned"], "constant": baselines["constant"]}
    for method, bundle in bundles.items():
        pred = predict_depth_mm(bundle, capture.rgb)
        shape = structure_scores(pred, capture.depth_mm)
        preds[f"{method} (shape r {shape['corr']:.2f})" if shape else method] = pred
    save_figure(plot_depth_grid(capture, preds), out_dir / "predictions.png")
