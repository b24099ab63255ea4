"""Training: a real tiny run on generated captures, then its output folder, reload and learning."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest
import torch

from depth_lora.data.captures import find_captures, load_capture
from depth_lora.data.split import straddling_groups
from depth_lora.errors import ConfigError, DataError
from depth_lora.inference.predict import ModelBundle, load_bundle, predict_depth_mm
from depth_lora.model.checkpoints import build_model
from depth_lora.model.precision import resolve_precision
from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.training.config import TrainConfig
from depth_lora.training.run import run_training

SIZE = [126, 196]


@pytest.fixture(scope="module")
def demo12(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo12")
    generate_demo_captures(data, 12, seed=0, size_hw=(240, 388), workers=1)
    return data


def tiny_config(data, output, **overrides) -> TrainConfig:
    values = dict(data=str(data), output=str(output), model="tiny", max_steps=6, batch_size=2,
                  image_size=SIZE, logging_steps=2, precision="fp32")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def trained(demo12, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    return run_training(tiny_config(demo12, out, epochs=2, max_steps=-1), progress=False)


def test_output_folder_holds_adapter_metadata_split_metrics_and_tensorboard(trained):
    out = trained.output_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "depth_lora.json", "split.json",
                 "metrics.json", "train_config.json", "base_model/config.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "depth_lora.json").read_text())
    assert meta["base_model"] == "tiny" and meta["pretrained"] is False
    assert meta["image_size_hw"] == SIZE
    assert meta["recipe"] == "recommended" and meta["labels"]["kind"] == "inverse"
    assert meta["config"]["lora_targets"] == ["qkv", "out", "mlp", "neck"] and meta["config"]["train_head"]
    assert 200 < meta["labels"]["depth_min_mm"] < meta["labels"]["depth_max_mm"] < 4500
    assert meta["zero_shot_calibration"]["space"] in ("inverse_depth", "depth")
    split = json.loads((out / "split.json").read_text())
    assert split["group_by"] == "session" and split["leaky"] is False
    assert all(split[s] for s in ("train", "val", "test"))
    assert sum(len(split[s]) for s in ("train", "val", "test")) == 12
    for name, groups in split["split_groups"].items():  # a session is in one split only
        assert {split["groups"][k] for k in split[name]} == set(groups)
    assert straddling_groups({s: split[s] for s in ("train", "val", "test")}, split["groups"]) == []
    metrics = json.loads((out / "metrics.json").read_text())
    best_step = int(meta["best_checkpoint"].rsplit("-", 1)[1])
    assert metrics["val"]["step"] == best_step  # the kept checkpoint's numbers, not the last epoch's
    for key in ("rmse_mm", "mae_mm", "abs_rel", "delta1"):
        assert np.isfinite(metrics["val"][key]), key
        for method in ("fine_tuned", "fine_tuned_aligned", "zero_shot_calibrated", "zero_shot_aligned",
                       "constant"):
            assert np.isfinite(metrics["test"][method][key]), (method, key)
    # metrics.json's test rows are the full-resolution evaluation `depth-lora evaluate` prints.
    from depth_lora.evaluation.report import run_evaluation

    report = run_evaluation(meta["data"], out, progress=False)
    assert metrics["test"]["fine_tuned"]["rmse_mm"] == pytest.approx(report.mean["fine_tuned"]["rmse_mm"])
    steps_per_epoch = -(-len(split["train"]) // 2)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted(
        f"checkpoint-{steps_per_epoch * e}" for e in (1, 2))


def test_tensorboard_has_scalars_and_the_validation_image_panel(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = glob.glob(str(trained.output_dir / "runs" / "*"))
    events = EventAccumulator(run_dir, size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/learning_rate", "eval/rmse_mm", "eval/mae_mm", "eval/abs_rel",
                "eval/delta1"):
        assert tag in tags["scalars"], tag
    panels = events.Images("eval/panel")
    steps = [e["step"] for e in trained.log_history if "eval_rmse_mm" in e]
    assert [p.step for p in panels][:2] == steps[:2] and len(steps) == 2
    assert panels[0].width > 400


def test_reloaded_output_folder_reproduces_the_trained_models_predictions(trained, demo12):
    capture = load_capture(find_captures(demo12)[0])
    reloaded = load_bundle(trained.output_dir, device="cpu", precision="fp32")
    in_memory = ModelBundle(
        trained.model.eval(), reloaded.labels, reloaded.image_size_hw, reloaded.record, trained.output_dir
    )
    a = predict_depth_mm(in_memory, capture.rgb)
    b = predict_depth_mm(reloaded, capture.rgb)
    assert a.shape == capture.depth_mm.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("train_head", [False, True])
def test_only_lora_and_requested_head_parameters_change(demo12, tmp_path, train_head):
    before = state(build_model("tiny", seed=0)[0])
    result = run_training(
        tiny_config(demo12, tmp_path / "out", train_head=train_head, learning_rate=1e-3), progress=False
    )
    after = result.model.state_dict()
    changed_base, changed_lora, changed_head = [], [], []
    for name, value in after.items():
        if "lora_" in name:
            changed_lora.append(name)
            continue
        base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "modules_to_save" in name:
            base_name = base_name.replace("modules_to_save.default.", "")
            if not torch.equal(value, before[base_name]):
                changed_head.append(base_name)
        elif "original_module" in name:
            assert torch.equal(value, before[base_name.replace("original_module.", "")]), name
        elif not torch.equal(value, before[base_name]):
            changed_base.append(base_name)
    assert changed_base == []
    lora_b = [n for n in changed_lora if "lora_B" in n]
    assert lora_b and all(after[n].abs().sum() > 0 for n in lora_b)  # lora_B starts at zero
    assert bool(changed_head) == train_head


@pytest.fixture(scope="module")
def demo24(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo24")
    # The many-cells demo data the learning margin below was measured on (a new cell every session).
    generate_demo_captures(data, 24, seed=1, size_hw=(240, 388), workers=2, cells=24)
    return data


# Learning must not depend on one CPU's rounding or one lucky seed: seed 0 in fp32 and in bf16 autocast
# by default, seeds 1 and 2 (the same path) under -m slow. Where the CPU has no native bf16, bf16 is
# emulated (150-190 s a seed on an AVX2-only CPU), and its seed 0 joins them: test_device's bf16 run
# still calibrates, trains and scores held-out captures in bf16 there.
NATIVE_BF16 = resolve_precision("auto", "cpu") == "bf16"


@pytest.mark.parametrize(("seed", "precision"), [
    (0, "fp32"), pytest.param(0, "bf16", marks=[] if NATIVE_BF16 else pytest.mark.slow),
    *(pytest.param(seed, precision, marks=pytest.mark.slow)
      for precision in ("fp32", "bf16") for seed in (1, 2))])
def test_the_recommended_recipe_beats_the_constant_predictor_on_held_out_sessions(demo24, tmp_path, seed,
                                                                                   precision):
    result = run_training(
        TrainConfig(data=str(demo24), output=str(tmp_path / "out"), model="demo-pretrained", seed=seed,
                    precision=precision, max_steps=LEARNING_STEPS, image_size=SIZE, eval_steps=50,
                    val_fraction=0.2, test_fraction=0.25, color_jitter=False),
        progress=False,
    )
    bundle = load_bundle(result.output_dir, device="cpu", precision=precision)  # scored as trained
    split = json.loads((result.output_dir / "split.json").read_text())
    files = {f.key: f for f in find_captures(demo24)}
    train_depths = np.concatenate([load_capture(files[k]).depth_mm.ravel() for k in split["train"]])
    train_mean = np.nanmean(train_depths)
    model_se, const_se, n = 0.0, 0.0, 0
    for key in split["val"] + split["test"]:  # whole sessions the model never trained on
        capture = load_capture(files[key])
        valid = capture.valid_mask
        pred = predict_depth_mm(bundle, capture.rgb)
        model_se += float(np.sum((pred[valid] - capture.depth_mm[valid]) ** 2))
        const_se += float(np.sum((train_mean - capture.depth_mm[valid]) ** 2))
        n += int(valid.sum())
    model_rmse, const_rmse = (model_se / n) ** 0.5, (const_se / n) ** 0.5
    print(f"held-out RMSE: model {model_rmse:.1f} mm, constant {const_rmse:.1f} mm")
    assert model_rmse < LEARNING_MARGIN * const_rmse


LEARNING_STEPS = 150
# Measured with the recipe (SiLog, lr 2e-3) on this set-up, seeds 0-4 x fp32/bf16 on an AMD EPYC
# with AVX-512 BF16: held-out RMSE 0.37-0.70x the constant's (bf16 and fp32 trajectories differ by
# up to 0.17 on one seed); on an AVX2-only Zen 3 (bf16 emulated): fp32 0.457-0.563, bf16 0.421-0.587
# (at most 0.07 apart on a seed), 2026-12-06. 0.8 keeps a margin for other CPUs' rounding; a model
# that learned nothing scores ~1, the original recipe 0.84-2.04.
LEARNING_MARGIN = 0.8


def test_recipe_original_reproduces_the_seed_projects_settings_and_explicit_options_win(demo12, tmp_path):
    run_training(TrainConfig(data=str(demo12), output=str(tmp_path / "o"), model="tiny", recipe="original",
                             max_steps=1, image_size=SIZE, precision="fp32"), progress=False)
    meta = json.loads((tmp_path / "o" / "depth_lora.json").read_text())
    assert meta["recipe"] == "original" and meta["labels"]["kind"] == "minmax"
    cfg = meta["config"]
    keys = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "train_head", "labels", "loss",
            "learning_rate", "epochs", "batch_size", "warmup_steps")
    assert {k: cfg[k] for k in keys} == {
        "lora_rank": 16, "lora_alpha": 32.0, "lora_dropout": 0.05, "lora_targets": ["qkv"],
        "train_head": False, "labels": "minmax", "loss": "mse", "learning_rate": 5e-5, "epochs": 10.0,
        "batch_size": 4, "warmup_steps": 0.0}
    assert meta["label_percentiles"] == [0.0, 100.0]  # plain min and max, as the original
    assert TrainConfig(recipe="original", learning_rate=1e-4, train_head=True).learning_rate == 1e-4
    assert TrainConfig(recipe="original", train_head=True).train_head is True
    assert TrainConfig().recipe == "recommended" and TrainConfig().labels == "inverse"


def test_too_few_sessions_fall_back_to_single_captures_loudly_and_the_report_says_so(tmp_path, capsys):
    from conftest import random_capture, write_capture

    from depth_lora.evaluation.report import run_evaluation

    rng = np.random.default_rng(0)
    for i in range(6):  # one session: six captures ten seconds apart
        write_capture(tmp_path / "data", f"21-03-15-10-00-{10 * i:02d}_Zivid_acquisition",
                      *random_capture(rng, 60, 97))
    run_training(tiny_config(tmp_path / "data", tmp_path / "out", max_steps=1), progress=False)
    assert "too few to keep groups apart" in capsys.readouterr().out
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["leaky"] is True and split["val"] and split["test"]
    report = run_evaluation(tmp_path / "data", tmp_path / "out", progress=False)
    assert "optimistic" in report.to_json()["note"]


def test_non_empty_output_folder_is_refused_without_resume_or_overwrite(demo12, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(DataError, match="output folder is not empty"):
        run_training(tiny_config(demo12, out), progress=False)
    with pytest.raises(DataError, match="--overwrite refused.*not a depth-lora run"):
        run_training(tiny_config(demo12, out, overwrite=True), progress=False)
    assert (out / "precious.txt").read_text() == "user data"


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="multiple of 14"):
        TrainConfig(image_size=[100, 196])
    with pytest.raises(ConfigError, match="unknown LoRA target group"):
        TrainConfig(lora_targets=["everything"])
    with pytest.raises(ConfigError, match="exclude each other"):
        TrainConfig(resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="--eval-steps must be >= 1"):
        TrainConfig(eval_steps=0)
    with pytest.raises(ConfigError, match="--eval-steps must be int"):
        TrainConfig(eval_steps="often")


def test_eval_steps_evaluates_and_checkpoints_every_n_steps_instead_of_every_epoch(demo12, tmp_path):
    result = run_training(tiny_config(demo12, tmp_path / "out", max_steps=4, eval_steps=2), progress=False)
    assert [e["step"] for e in result.log_history if "eval_rmse_mm" in e] == [2, 4]
    kept = sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-4"]


def test_default_cadence_evaluates_about_ten_times_per_run_and_at_the_last_step(demo12, tmp_path, capsys):
    from depth_lora.training.trainer import MAX_EVALUATIONS, default_eval_steps

    # 2 steps per epoch: every epoch would be 13 evaluations and checkpoints in 25 steps.
    cfg = tiny_config(demo12, tmp_path / "out", max_steps=25, batch_size=4, image_size=[56, 84],
                      logging_steps=50, early_stopping=0)  # the cadence alone: every step runs
    result = run_training(cfg, progress=True)
    train_size = len(json.loads((tmp_path / "out" / "split.json").read_text())["train"])
    steps_per_epoch = -(-train_size // 4)
    every = default_eval_steps(train_size, 4, 10.0, 25)
    assert every > steps_per_epoch
    evaluated = [e["step"] for e in result.log_history if "eval_rmse_mm" in e]
    assert evaluated == [*range(every, 25, every), 25]  # the end of the run is a candidate too
    assert len(evaluated) <= MAX_EVALUATIONS + 1
    printed = capsys.readouterr().out
    line = next(t for t in printed.splitlines() if t.startswith("trained 25 steps in"))
    assert "% of the time outside training steps" in line
    assert f"({len(evaluated)} evaluations, {len(evaluated)} checkpoints)" in line
    # Long epochs: still every epoch (the cap only thins out many short ones).
    assert default_eval_steps(train_size=400, batch_size=4, epochs=10, max_steps=-1) == 100
    assert default_eval_steps(train_size=24, batch_size=4, epochs=50, max_steps=-1) == 30


def test_gradient_checkpointing_gives_the_same_first_step(demo12, tmp_path):
    # Recomputing activations must not change the maths: same seed, same loss, same gradients.
    losses, grad_norms = [], []
    for gc in (False, True):
        result = run_training(
            tiny_config(demo12, tmp_path / f"out{gc}", max_steps=1, gradient_checkpointing=gc,
                        flip=False, color_jitter=False, lora_dropout=0.0, train_head=True),
            progress=False,
        )
        state = json.loads((result.output_dir / "checkpoint-1" / "trainer_state.json").read_text())
        entry = next(e for e in state["log_history"] if "loss" in e)
        losses.append(entry["loss"])
        grad_norms.append(entry["grad_norm"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert grad_norms[0] > 0 and grad_norms[0] == pytest.approx(grad_norms[1], rel=1e-3)


def test_overwrite_replaces_an_earlier_run_but_keeps_the_folders_readme(demo12, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("about this folder")
    run_training(tiny_config(demo12, out, max_steps=5), progress=False)
    assert (out / "checkpoint-5").is_dir()
    run_training(tiny_config(demo12, out, max_steps=2, overwrite=True), progress=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "README.md").read_text() == "about this folder"
    assert "base_model_dir" not in (out / "MODEL_CARD.md").read_text()  # the card went beside it
    assert "# out" in (out / "MODEL_CARD.md").read_text()


def test_resume_with_different_model_options_is_refused(demo12, tmp_path):
    out = tmp_path / "out"
    run_training(tiny_config(demo12, out, max_steps=5), progress=False)
    with pytest.raises(ConfigError, match="lora_rank 16 -> 4"):
        run_training(tiny_config(demo12, out, max_steps=10, resume=True, lora_rank=4), progress=False)


@pytest.mark.parametrize("options", [{"labels": "inverse", "loss": "silog"}, {"loss": "l1"},
                                     {"finetune": "full"}, {"labels": "inverse", "loss": "ssi"}])
def test_other_label_schemes_losses_and_full_fine_tuning_train_and_evaluate(demo12, tmp_path, options):
    from safetensors.torch import load_file

    from depth_lora.evaluation.report import run_evaluation

    cfg = tiny_config(demo12, tmp_path / "out", max_steps=3, **options)
    result = run_training(cfg, progress=False)
    out = result.output_dir
    record = json.loads((out / "depth_lora.json").read_text())
    assert all(record["config"][name] == value for name, value in options.items())  # what was asked
    assert record["labels"]["kind"] == cfg.labels and record["config"]["loss"] == cfg.loss
    assert np.isfinite(result.metrics["val"]["rmse_mm"])
    report = run_evaluation(demo12, out, split="test", progress=False)  # reloaded from the folder
    for method in ("fine_tuned", "zero_shot_aligned", "constant"):
        assert np.isfinite(report.mean[method]["rmse_mm"]), method
    # What the folder reloads to is what the run scored when it finished.
    scored = json.loads((out / "metrics.json").read_text())["test"]["fine_tuned"]["rmse_mm"]
    assert report.mean["fine_tuned"]["rmse_mm"] == pytest.approx(scored, rel=1e-4)
    if options.get("finetune") == "full":  # a whole model, every weight trained: the backbone moved
        assert not (out / "adapter_config.json").exists()
        saved, initial = load_file(out / "model.safetensors"), build_model("tiny", seed=0)[0].state_dict()
        backbone = [k for k in saved if "backbone" in k and k in initial]
        assert backbone and any(not torch.equal(saved[k], initial[k]) for k in backbone)
    else:  # LoRA's B matrices start at zero: trained, they are not
        adapter = load_file(out / "adapter_model.safetensors")
        assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)
    # A relative (ssi) model is scored after the oracle alignment, and the report says so.
    assert report.relative == (options.get("loss") == "ssi")
    assert ("scale-and-shift-invariant" in report.to_json()["note"]) == report.relative


def test_a_fully_fine_tuned_run_keeps_every_weight_of_its_best_checkpoint(demo12, tmp_path):
    from transformers import AutoModelForDepthEstimation

    from depth_lora.training.run import reload_full_model

    out = tmp_path / "out"
    run_training(tiny_config(demo12, out, finetune="full", max_steps=2, eval_steps=1, learning_rate=1e-2),
                 progress=False)
    load = lambda folder: AutoModelForDepthEstimation.from_pretrained(folder)  # noqa: E731
    best = json.loads((out / "depth_lora.json").read_text())["best_checkpoint"]
    saved, kept = load(out).state_dict(), load(best).state_dict()
    assert all(torch.equal(saved[k], kept[k]) for k in kept)  # the saved model is the kept one, all of it
    # Loading step 1 into a model at step 2 restores every tensor, attention included.
    first, model = load(out / "checkpoint-1").state_dict(), load(out / "checkpoint-2")
    attention = [k for k in first if ".attention." in k and k.endswith("weight")]
    assert attention and any(not torch.equal(first[k], model.state_dict()[k]) for k in attention)
    reload_full_model(model, str(out / "checkpoint-1"))
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())


def test_relative_validation_metrics_score_depth_up_to_scale_and_shift():
    from transformers import EvalPrediction

    from depth_lora.data.dataset import LabelScheme
    from depth_lora.training.trainer import make_compute_metrics

    scheme = LabelScheme("inverse", 300.0, 3000.0)
    rng = np.random.default_rng(0)
    labels = rng.uniform(0.1, 1.0, size=(2, 8, 12)).astype(np.float32)
    valid = np.ones(labels.shape, dtype=bool)
    preds = np.stack([2.0 * labels[0] + 0.3, 0.5 * labels[1] - 0.01])  # per-capture scale and shift
    eval_pred = EvalPrediction(predictions=preds, label_ids=(labels, valid))
    assert make_compute_metrics(scheme, relative=True)(eval_pred)["rmse_mm"] < 1e-2
    assert make_compute_metrics(scheme, relative=False)(eval_pred)["rmse_mm"] > 100


def test_split_of_an_earlier_run_is_reused_and_bad_split_files_are_named(trained, demo12, tmp_path):
    earlier = json.loads((trained.output_dir / "split.json").read_text())
    run_training(tiny_config(demo12, tmp_path / "b", max_steps=1, seed=7,
                             split=str(trained.output_dir / "split.json")), progress=False)
    reused = json.loads((tmp_path / "b" / "split.json").read_text())
    for name in ("train", "val", "test"):
        assert reused[name] == earlier[name]
    assert reused["from_split"] == str(trained.output_dir / "split.json")

    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"train": ["nope"], "val": earlier["val"], "test": []}))
    with pytest.raises(DataError, match="foreign.json.*not in"):
        run_training(tiny_config(demo12, tmp_path / "c", max_steps=1, split=str(foreign)), progress=False)
    with pytest.raises(DataError, match="missing.json.*does not exist"):
        run_training(tiny_config(demo12, tmp_path / "d", max_steps=1, split=str(tmp_path / "missing.json")),
                     progress=False)
