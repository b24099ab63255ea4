"""The walkthrough notebook runs headless, top to bottom, offline, on generated captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from depth_lora.training.config import EARLY_STOPPING

NOTEBOOK = Path(__file__).resolve().parents[1] / "projet_transformers.ipynb"


def test_notebook_is_committed_without_outputs_and_with_a_parameters_cell():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    ids = [c.get("id") for c in nb["cells"]]  # nbformat 4.5: a cell without one is a future hard error
    assert all(ids) and len(set(ids)) == len(ids)
    # The notebook tells the story; the package does the work.
    lines = [line for c in code for line in "".join(c["source"]).splitlines()]
    assert lines and not any(line.lstrip().startswith(("def ", "class ")) for line in lines)


def test_the_notebook_gets_the_demo_job_quickstart_runs(tmp_path, capsys):
    from depth_lora.training.quickstart import quickstart_config

    # What the notebook's parameters cell asks for by default (MAX_STEPS = -1).
    cfg = quickstart_config(tmp_path, tmp_path / "out", model="demo-pretrained", max_steps=-1)
    assert cfg.image_size == [168, 266] and cfg.max_steps == 400 and cfg.eval_steps == 40
    assert "input 168 x 266 (H x W), 400 steps" in capsys.readouterr().out


def test_notebook_runs_offline_after_quickstart_filled_its_default_output_folder(tmp_path, monkeypatch):
    # The README's order: quickstart first, then the notebook into the same default folder. The
    # notebook refuses to replace quickstart's run, naming its own parameters, and replaces it when
    # told to with OVERWRITE = True; offline, it falls back to demo-pretrained and its recipe.
    papermill = pytest.importorskip("papermill")
    from depth_lora.cli.commands import main
    from depth_lora.synthetic.demo import generate_demo_captures
    from depth_lora.training.quickstart import OFFLINE_DEMO

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    generate_demo_captures(tmp_path / "quickstart_data", 8, seed=2, size_hw=(120, 194), workers=1)
    monkeypatch.setitem(OFFLINE_DEMO, "max_steps", 4)  # quickstart's job, made short for the test
    assert main(["quickstart", "--data", "quickstart_data"]) == 0
    out = tmp_path / "depth_anything_finetuned_lora_zivid"  # the default OUTPUT, quickstart's run
    (tmp_path / "data").mkdir()  # an empty folder gets demo captures; a missing one is an error
    parameters = dict(DATA=str(tmp_path / "data"), DEMO=True, DEMO_COUNT=12, DEMO_SIZE=[240, 388],
                      MAX_STEPS=60, COMPLETER_STEPS=20)  # MODEL None: offline, demo-pretrained
    with pytest.raises(papermill.PapermillExecutionError, match="OVERWRITE = True"):
        papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "refused.ipynb"), parameters=parameters,
                                   cwd=str(tmp_path), progress_bar=False, kernel_name="python3")
    refused = json.loads((tmp_path / "refused.ipynb").read_text())  # it made the demo captures first
    assert "generating 12 Zivid-like demo captures" in json.dumps(refused["cells"])
    assert json.loads((out / "depth_lora.json").read_text())["data"].endswith("quickstart_data")  # kept
    executed = papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "executed.ipynb"), parameters={**parameters, "OVERWRITE": True},
        cwd=str(tmp_path), progress_bar=False, kernel_name="python3")
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    for expected in ("OFFLINE DEMO MODEL 'demo-pretrained'", "demo-pretrained job size",
                     "Recipe 'recommended'", "adapted layers", "Using the captures in",
                     "depth mean (mm)", "trainable params",
                     "def compute_loss", "fine_tuned_aligned", "zero_shot_calibrated", "zero_shot_aligned",
                     "constant", "Kept: the checkpoint of step", "(test split)", ".ply", "completer_start",
                     "against the completer before fine-tuning", "The default fill's 90 % interval"):
        assert expected in text, expected
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    # histogram, gallery, model input, metrics, held-out comparison, three hole fills (with a model,
    # without one beside its error bar, the completer), new image
    assert len(figures) >= 8
    for name in ("adapter_model.safetensors", "depth_lora.json", "split.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "depth_lora.json").read_text())
    assert meta["base_model"] == "demo-pretrained" and meta["data"] == str(tmp_path / "data")  # replaced
    val = json.loads((out / "metrics.json").read_text())["val"]
    assert val["max_steps"] == 60  # the test's MAX_STEPS; early stopping may end it sooner, and says so
    stopped = meta["global_step"] < 60
    assert not stopped or val["stopped_early"] == EARLY_STOPPING
    assert ("Training stopped at step" in text) == stopped
    completer = json.loads((out / "completer" / "depth_lora.json").read_text())
    completer_val = json.loads((out / "completer" / "metrics.json").read_text())["val"]
    assert completer["task"] == "complete" and completer_val["max_steps"] == 20  # the test's COMPLETER_STEPS
    assert completer["global_step"] == 20 or completer_val["stopped_early"] == EARLY_STOPPING
