"""`depth-lora train --help` says what each flag does, and argument errors come before torch (issue 15)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from depth_lora.cli.commands import main
from depth_lora.cli.flags import add_dataclass_flags
from depth_lora.cli.parser import build_parser, check_arguments
from depth_lora.training.config import TrainConfig, field_names
from depth_lora.training.config_file import read_config_file


def train_help(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def flat(text: str) -> str:
    """The help with its line wrapping undone."""
    return " ".join(text.split())


def help_entry(text: str, flag: str) -> str:
    """The (flattened) help of one flag: from its line up to the next flag's line."""
    lines = text.split("\n\n", 2)[2].splitlines()  # after usage and description
    starts = [i for i, line in enumerate(lines) if line.startswith("  -")]  # wrapped lines: 24 spaces
    start = next(i for i in starts if lines[i][2:].replace(",", " ").split()[0] == flag)
    end = next((i for i in starts if i > start), len(lines))
    return flat(" ".join(lines[start:end]))


def parse_train(*flags: str) -> dict:
    args = build_parser().parse_args(["train", *flags])
    return {name: getattr(args, name) for name in field_names()}


def test_no_flip_help_says_it_turns_flips_off(capsys):
    text = train_help(capsys)
    assert help_entry(text, "--no-flip") == "--no-flip do not augment with random horizontal flips"
    assert help_entry(text, "--no-color-jitter") == (
        "--no-color-jitter do not augment with mild brightness/contrast/saturation jitter"
    )
    assert "(default: False)" not in flat(text) and "(default: True)" not in flat(text)


def test_usage_shows_hyphen_spellings_and_plain_switches(capsys):
    text = train_help(capsys)
    usage = flat(text.split("\n\n")[0])
    for shown in ("[--image-size H W]", "[--no-flip]", "[--train-head | --no-train-head]", "[--resume]",
                  "[--lora-targets GROUP [GROUP ...]]", "[--eval-steps N]", "[--split SPLIT]",
                  "[--precision {auto,fp32,fp16,bf16}]"):
        assert shown in usage, shown
    assert not re.findall(r"--\w*_\w*", text)  # no underscore spelling anywhere
    assert "[--train-head [" not in usage and "[--flip [" not in usage


def test_each_default_is_shown_once(capsys):
    text = train_help(capsys)
    assert help_entry(text, "--max-steps").endswith("(-1: use --epochs) (default: -1)")
    assert help_entry(text, "--lora-bias").endswith("PEFT LoRA bias (default: none)")
    image_size = help_entry(text, "--image-size")
    assert image_size.count("default") == 1 and "None" not in image_size
    for f in dataclasses.fields(TrainConfig):
        entry, default = help_entry(text, shown_flag(f)), default_of(f)
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        assert entry.count("default") == f.metadata["help"].count("default") or entry.endswith(
            f"(default: {shown})"
        ), entry
        assert entry.count("default") <= 1, entry


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def shown_flag(f: dataclasses.Field) -> str:
    flag = "--" + f.name.replace("_", "-")
    return "--no-" + flag[2:] if f.default is True else flag


def test_every_train_config_field_has_a_flag_in_the_help(capsys):
    text = train_help(capsys)
    for f in dataclasses.fields(TrainConfig):
        assert help_entry(text, shown_flag(f)), f.name


def test_flags_parse_to_the_values_train_config_expects():
    values = parse_train("--no-flip", "--image-size", "126", "196", "--train-head")
    assert values["flip"] is False and values["image_size"] == [126, 196] and values["train_head"] is True
    cfg = TrainConfig(**values)
    assert cfg.flip is False and cfg.image_size == [126, 196] and cfg.train_head is True


def test_underscore_spellings_of_old_commands_still_parse():
    new = parse_train("--no-flip", "--image-size", "126", "196", "--train-head", "--lora-targets", "qkv",
                      "out", "--learning-rate", "1e-4", "--no-color-jitter", "--gradient-checkpointing")
    old = parse_train("--no_flip", "--image_size", "126", "196", "--train_head", "--lora_targets", "qkv",
                      "out", "--learning_rate", "1e-4", "--no_color_jitter", "--gradient_checkpointing")
    assert old == new
    # HfArgumentParser's bools took a value: `--train_head false`, `--flip false`.
    valued = parse_train("--train_head", "false", "--flip", "false", "--gradient_checkpointing", "true")
    assert (valued["train_head"], valued["flip"], valued["gradient_checkpointing"]) == (False, False, True)


def test_flags_not_given_keep_the_dataclass_defaults_none_included():
    values = parse_train()
    for f in dataclasses.fields(TrainConfig):
        default = default_of(f)
        assert values[f.name] == default and type(values[f.name]) is type(default), f.name
    assert values["train_head"] is None  # None: "take it from the recipe", never replaced here


def test_a_config_file_false_is_turned_back_on_by_the_flag(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"flip": False, "train_head": True}))
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subparsers.choices["train"].set_defaults(**read_config_file(config))  # what main does with --config
    args = parser.parse_args(["train", "--config", str(config)])
    assert args.flip is False and args.train_head is True
    args = parser.parse_args(["train", "--config", str(config), "--flip", "--no-train-head"])
    assert args.flip is True and args.train_head is False


@dataclass
class _Options:
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "the mode"})
    sizes: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "some sizes"})
    steps: int | None = field(default=None, metadata={"help": "steps (default: all)"})
    name: str | None = field(default=None, metadata={"help": "a name"})
    fast_path: bool = field(default=False, metadata={"help": "take the fast path"})
    use_cache: bool = field(default=True, metadata={"help": "cache results"})
    smooth: bool | None = field(default=None, metadata={"help": "smooth (recipe: yes)"})


def test_any_dataclass_becomes_flags_from_its_types():
    parser = argparse.ArgumentParser(prog="x")
    add_dataclass_flags(parser, _Options)
    assert vars(parser.parse_args([])) == dataclasses.asdict(_Options())
    args = parser.parse_args(["--mode", "b", "--sizes", "3", "--steps", "5", "--name", "n", "--fast-path",
                              "--no-use-cache", "--no-smooth"])
    assert vars(args) == {"mode": "b", "sizes": [3], "steps": 5, "name": "n", "fast_path": True,
                          "use_cache": False, "smooth": False}
    usage = flat(parser.format_usage())
    for shown in ("[--mode {a,b}]", "[--sizes N [N ...]]", "[--steps N]", "[--name NAME]", "[--fast-path]",
                  "[--no-use-cache]", "[--smooth | --no-smooth]"):
        assert shown in usage, shown
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])


def test_overrides_must_name_a_field():
    with pytest.raises(ValueError, match="unknown fields of _Options"):
        add_dataclass_flags(argparse.ArgumentParser(), _Options, {"sizez": {"nargs": 2}})


def test_a_missing_data_folder_is_one_stderr_line_and_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["train", "--data", str(missing), "--output", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"depth-lora train: error: {missing}: data folder does not exist"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{tmp}", "--adapter", "{tmp}", "--out", "o", "--format", "jpg"],
         "--format: unknown format(s) jpg; choose from npy, png, ply"),
        (["predict", "{tmp}", "--adapter", "{tmp}", "--out", "o", "--format", "npy,ply"],
         "--format ply: a point cloud needs --intrinsics"),
        (["predict", "{tmp}/x.png", "--adapter", "{tmp}", "--out", "o"],
         "{tmp}/x.png: no such image file or folder"),
        (["predict", "{tmp}", "--adapter", "{tmp}", "--out", "o", "--intrinsics-from", "{tmp}/xyz.npy"],
         "{tmp}/xyz.npy: depth file does not exist"),
        (["predict", "{tmp}", "--adapter", "{tmp}/nowhere", "--out", "o"],
         "{tmp}/nowhere: adapter folder does not exist"),
        (["merge", "--adapter", "{tmp}/nowhere", "--output", "m"],
         "{tmp}/nowhere: adapter folder does not exist"),
        (["evaluate", "--data", "{tmp}/d", "--adapter", "{tmp}"], "{tmp}/d: data folder does not exist"),
        (["bench", "--data", "{tmp}"], "{tmp}: no captures found"),
        (["analyze", "{tmp}/d"], "{tmp}/d: data folder does not exist"),
    ],
)
def test_argument_errors_come_before_torch_is_imported(tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code = (f"import sys, depth_lora.cli.commands as c; rc = c.main({argv!r}); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["2", "False"], out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"depth-lora {argv[0]}: error: {message.format(tmp=tmp_path)}"), line


def test_quickstart_refuses_a_data_folder_that_does_not_exist_before_writing_anything(tmp_path, capsys):
    # A typo in --data must not become 700 MB of demo captures and a demo run reported as success.
    typo = tmp_path / "does_not_exist"
    code = main(["quickstart", "--data", str(typo), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"{typo}: no such folder" in err and len(err.strip().splitlines()) == 1
    assert not typo.exists() and not (tmp_path / "out").exists()
    args = build_parser().parse_args(["quickstart", "--data", str(tmp_path)])  # empty: demo captures
    check_arguments(args)
