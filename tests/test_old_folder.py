"""A run folder written by the previous version of depth-lora (before the typed run record, commit
0061b91) still loads, evaluates, predicts and completes.

tests/data/run_format1/ is that version's own output, kept as it wrote it (checkpoints and
TensorBoard logs left out): `depth-lora demo-data data --count 9 --seed 3 --size 120 194` (a cell
per session then: `--cells 9` now), then
`depth-lora train --data data --output run_v0 --model demo-pretrained --recipe original
--lora-rank 2 --max-steps 4 --image-size 56 84 --batch-size 2`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from depth_lora import load_bundle, predict_depth_mm, run_evaluation
from depth_lora.cli.commands import main
from depth_lora.data.captures import find_captures, load_capture
from depth_lora.runs.folder import RunRecord, read_record, write_record
from depth_lora.synthetic.demo import generate_demo_captures

OLD_RUN = Path(__file__).parent / "data" / "run_format1"


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("old")
    data = root / "data"
    # The captures it was trained on: the demo data of then, a new cell every session.
    generate_demo_captures(data, 9, seed=3, size_hw=(120, 194), workers=1, cells=9)
    run = root / "run_v0"
    shutil.copytree(OLD_RUN, run)
    return data, run


def test_the_old_record_reads_into_the_typed_record_and_writes_back_unchanged(old_run, tmp_path):
    _, run = old_run
    record = read_record(run)
    assert record.base_model == "demo-pretrained" and record.image_size_hw == (56, 84)
    assert record.labels["kind"] == "minmax" and record.loss == "mse" and not record.scale_invariant
    assert record.warning and record.extra == {}
    write_record(tmp_path, record)
    before = json.loads((run / "depth_lora.json").read_text())
    assert json.loads((tmp_path / "depth_lora.json").read_text()) == before


def test_unknown_keys_survive_a_rewrite():
    record = RunRecord.from_dict({"base_model": "tiny", "labels": {}, "from_the_future": [1, 2]})
    assert record.extra == {"from_the_future": [1, 2]}
    assert record.to_dict()["from_the_future"] == [1, 2]


def test_an_old_folder_evaluates_with_the_rows_it_recorded(old_run):
    data, run = old_run
    report = run_evaluation(data, run, split="test", progress=False, precision="fp32")
    recorded = json.loads((run / "metrics.json").read_text())["test"]
    for method in ("fine_tuned", "zero_shot_calibrated", "constant"):
        # recorded in bf16 on the machine that trained it; fp32 here: the same within a few mm
        assert report.mean[method]["rmse_mm"] == pytest.approx(recorded[method]["rmse_mm"], abs=5.0)


def test_an_old_folder_predicts_and_completes(old_run, tmp_path):
    data, run = old_run
    capture = load_capture(find_captures(data)[0])
    depth = predict_depth_mm(load_bundle(run, device="cpu", precision="fp32"), capture.rgb)
    assert depth.shape == capture.size_hw and np.isfinite(depth).all() and (depth > 0).all()
    assert main(["complete", str(data), "--adapter", str(run), "--out", str(tmp_path / "c")]) == 0
    assert len(list((tmp_path / "c").glob("*_completed_mm.npy"))) == 9
