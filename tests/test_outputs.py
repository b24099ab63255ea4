"""The output folder's one owner: format version, model card, and nobody else touching its files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from depth_lora.cli.commands import main
from depth_lora.errors import ModelError
from depth_lora.runs.folder import FORMAT_VERSION, META_FILE, RunRecord, read_record
from depth_lora.runs.model_card import CARD_MARKER, card_header, model_card
from depth_lora.synthetic.demo import generate_demo_captures
from depth_lora.training.config import TrainConfig
from depth_lora.training.run import run_training

SRC = Path(__file__).resolve().parents[1] / "src" / "depth_lora"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    data = root / "data"
    generate_demo_captures(data, 10, seed=3, size_hw=(120, 194), workers=1)
    cfg = TrainConfig(data=str(data), output=str(root / "out"), model="tiny", max_steps=2, batch_size=2,
                      image_size=[42, 70], precision="fp32")
    run_training(cfg, progress=False)
    return data, root / "out"


def front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "the card starts with a YAML header"
    return yaml.safe_load(match.group(1))


def test_a_run_writes_a_model_card_whose_yaml_header_parses(run):
    _, out = run
    card = (out / "README.md").read_text()
    header = front_matter(card)
    assert header["library_name"] == "peft" and header["pipeline_tag"] == "depth-estimation"
    assert {"depth-anything", "lora", "depth-estimation"} <= set(header["tags"])
    assert "base_model" not in header  # a random-init base is not on the hub
    assert CARD_MARKER in card
    split = json.loads((out / "split.json").read_text())
    assert f"{len(split['train'])} train, {len(split['val'])} validation, {len(split['test'])} test" in card
    assert "| zero_shot_calibrated |" in card and "| fine_tuned |" in card  # the held-out table
    assert "Camera: 120 x 194 px, intrinsics fx" in card  # fitted to the captures' XYZ maps
    assert 'load_bundle("out")' in card and "hf upload" in card
    assert "compared at full resolution (each capture's own)" in card and "full (full" not in card
    assert "pip install depth-lora" not in card  # not a published package: installed from a checkout
    assert "Kept: " not in card and ("Verdict: " in card) != ("No verdict: " in card)  # the verdict


def test_the_card_names_a_hub_base_model_and_a_merged_model_is_plain_transformers():
    record = RunRecord("depth-anything/Depth-Anything-V2-Small-hf", labels={"kind": "inverse",
                       "depth_min_mm": 400.0, "depth_max_mm": 900.0}, image_size_hw=[518, 840])
    assert card_header(record)["base_model"] == "depth-anything/Depth-Anything-V2-Small-hf"
    merged = card_header(record.derived(merged=True))
    assert merged["library_name"] == "transformers" and "lora" not in merged["tags"]
    text = model_card(record, None, None, "my_adapter")
    assert front_matter(text)["base_model"] == record.base_model
    assert "depth_mm = 400.000 / output" in text and "no held-out table" in text


def test_a_folder_from_a_newer_format_is_refused_in_one_line(run, tmp_path, capsys):
    _, out = run
    payload = json.loads((out / META_FILE).read_text())
    assert payload["format_version"] == 1  # a training folder: readable by every depth-lora version
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / META_FILE).write_text(json.dumps({**payload, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ModelError, match=f"format_version {FORMAT_VERSION + 1} is newer"):
        read_record(newer)
    image = next((run[0] / "images").glob("*.png"))
    assert main(["predict", str(image), "--adapter", str(newer), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "upgrade depth-lora" in err and "newer" in err


def test_merge_writes_its_own_card_and_keeps_the_split(run, tmp_path):
    _, out = run
    assert main(["merge", "--adapter", str(out), "--output", str(tmp_path / "merged")]) == 0
    merged = tmp_path / "merged"
    assert front_matter((merged / "README.md").read_text())["library_name"] == "transformers"
    assert (merged / "split.json").is_file() and read_record(merged).merged is True


def test_only_the_output_folder_module_names_the_output_folder_files():
    owner = SRC / "runs" / "folder.py"
    for path in SRC.rglob("*.py"):
        if path == owner:
            continue
        text = path.read_text()
        for name in ('"depth_lora.json"', '"split.json"', '"metrics.json"', '"train_config.json"'):
            assert name not in text, f"{path.name} names {name}: go through depth_lora.runs.folder"
