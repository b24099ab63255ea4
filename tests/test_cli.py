"""The command line as a user meets it: one-line errors, config files, quickstart offline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_capture, write_capture

from depth_lora.cli.commands import main
from depth_lora.synthetic.demo import generate_demo_captures


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The error must be exactly one line (progress bars aside) and no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "depth_lora", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("quickstart", "analyze", "demo-data", "train"):
        assert verb in out.stdout


@pytest.mark.parametrize(
    "make_bad, expected",
    [
        (lambda d: None, "data folder does not exist"),
        (lambda d: d.mkdir(), "no captures found"),
        (lambda d: (d / "images").mkdir(parents=True) or (d / "images" / "x_color.png").write_bytes(b"x"),
         "x_color.png has no depth file"),
    ],
)
def test_bad_data_folders_end_in_one_line(tmp_path, capsys, make_bad, expected):
    data = tmp_path / "data"
    make_bad(data)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for verb in (["analyze", data], ["train", "--data", data, "--output", tmp_path / "o", "--model", "tiny"]):
        code, _, err = run_cli(verb, capsys)
        assert code == 2
        assert expected in error_line(err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, even by train


def test_demo_data_refuses_a_folder_with_captures(tmp_path, capsys):
    rgb, xyz = random_capture(np.random.default_rng(0), 20, 30)
    image, depth = write_capture(tmp_path, "mine", rgb, xyz)
    code, _, err = run_cli(["demo-data", tmp_path, "--count", 2, "--size", 64, 96], capsys)
    assert code == 2 and str(tmp_path) in error_line(err)
    assert image.read_bytes() and np.array_equal(np.load(depth), xyz, equal_nan=True)


def test_train_options_come_from_a_yaml_file_and_flags_win(tmp_path, capsys):
    data = tmp_path / "data"
    generate_demo_captures(data, 6, seed=3, size_hw=(120, 194), workers=1)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {data}\nmodel: tiny\nmax-steps: 2\nbatch_size: 2\nimage_size: [70, 112]\n"
        "lora_rank: 4\nprecision: fp32\nlogging_steps: 1\n"
    )
    out = tmp_path / "out"
    code, stdout, err = run_cli(["train", "--config", config, "--output", out, "--lora-rank", 2], capsys)
    assert code == 0, err
    meta = json.loads((out / "depth_lora.json").read_text())
    assert meta["config"]["lora_rank"] == 2 and meta["config"]["max_steps"] == 2
    assert meta["image_size_hw"] == [70, 112]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    assert "RMSE" in stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rat: 0.1\n", "run.yaml: unknown option(s) learning_rat"),
        ("finetune: LoRA\n", "run.yaml: --finetune must be one of lora, full, got 'LoRA'"),
        ("batch_size: two\n", "run.yaml: --batch-size must be int, got 'two'"),
        ("image_size: 518\n", "run.yaml: --image-size takes a list, got 518"),
        ("[1, 2]\n", "run.yaml: expected a mapping"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, _, err = run_cli(["train", "--config", config, "--output", tmp_path / "out"], capsys)
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "out").exists()


def test_yaml_numbers_written_like_5e_5_are_read_as_numbers(tmp_path):
    from depth_lora.training.config import TrainConfig
    from depth_lora.training.config_file import read_config_file

    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 5e-5\nepochs: 3\n")  # PyYAML reads 5e-5 as a string
    cfg = TrainConfig(**read_config_file(config))
    assert cfg.learning_rate == 5e-5 and cfg.epochs == 3.0


def test_quickstart_config_takes_train_options_by_name_and_refuses_unknown_ones(monkeypatch, capsys):
    from depth_lora.errors import ConfigError
    from depth_lora.training.quickstart import quickstart_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("depth_lora.model.checkpoints.is_cached", lambda model: False)  # as on CI
    cfg = quickstart_config("data", "out", "tiny", learning_rate="1e-3", lora_rank=4)
    assert (cfg.model, cfg.learning_rate, cfg.lora_rank, cfg.recipe) == ("tiny", 1e-3, 4, "recommended")
    assert "demo-pretrained job size" not in capsys.readouterr().out  # the tiny model keeps its job
    demo = quickstart_config("data", "out", None, max_steps=20)  # offline: the demo model, loudly
    assert demo.model == "demo-pretrained" and demo.max_steps == 20 and demo.eval_steps == 2
    assert "OFFLINE DEMO MODEL" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unknown option.s. lora_rnak; the options are: .*lora_rank"):
        quickstart_config("data", "out", "tiny", lora_rnak=4)


def test_quickstart_offline_falls_back_to_the_demo_model_loudly(tmp_path, capsys, monkeypatch):
    from depth_lora.training.quickstart import OFFLINE_DEMO

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(OFFLINE_DEMO, "max_steps", 40)  # the demo's job, shortened: the path is the same
    data, out = tmp_path / "data", tmp_path / "out"
    generate_demo_captures(data, 8, seed=4, size_hw=(120, 194), workers=1)
    code, stdout, err = run_cli(["quickstart", "--data", data, "--output", out], capsys)
    assert code == 0, err
    assert "OFFLINE DEMO MODEL 'demo-pretrained'" in stdout and "NOT DEPTH ANYTHING'S" in stdout
    assert "depth mean (mm)" in stdout and "zero_shot_calibrated" in stdout and "RMSE mm" in stdout
    assert "Recipe 'recommended'" in stdout and "What the table says" in stdout and "Next steps" in stdout
    # a time estimate measured on this machine before most of the training, and the verdict's reading
    estimate = next(line for line in stdout.splitlines() if line.startswith("estimate: "))
    assert "(steps 2-6, measured here): about " in estimate and "for the 34 steps left" in estimate
    assert stdout.index("estimate: ") < stdout.index("step 40/40")
    assert "Kept: the checkpoint of step" in stdout and ("Verdict: " in stdout) != ("No verdict: " in stdout)
    for name in ("analysis/stats.json", "analysis/depth_histogram.png", "analysis/capture_gallery.png",
                 "adapter_model.safetensors", "depth_lora.json", "metrics.json",
                 "evaluation/test/report.json", "evaluation/test/metrics.png"):  # as evaluate --plots
        assert (out / name).is_file(), name
    meta = json.loads((out / "depth_lora.json").read_text())
    assert meta["base_model"] == "demo-pretrained" and meta["base_model_dir"] is None
    assert meta["config"]["lora_targets"] == ["qkv", "out", "mlp", "neck"] and meta["config"]["train_head"]
    # Running it again does not replace the earlier run.
    code, _, err = run_cli(["quickstart", "--data", data, "--output", out], capsys)
    assert code == 2 and "output folder is not empty" in error_line(err)
    assert "--overwrite" in err and "--resume" not in err  # quickstart has no --resume: not suggested
