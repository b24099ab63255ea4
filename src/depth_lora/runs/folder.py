"""The output folder of a run: this module alone reads and writes its files, with a format version.

    OUT/
      depth_lora.json     what the run is: base model, labels, input size, calibration, ... (META_FILE)
      split.json          the train / val / test capture keys (data.save_split's format)
      metrics.json        the kept checkpoint's validation metrics and the test split's rows
      train_config.json   the resolved TrainConfig; written first, it marks the folder as a run
      README.md           the model card (Hugging Face conventions), see model_card.py
      adapter_config.json + adapter_model.safetensors (PEFT), or config.json + model.safetensors
      base_model/         a random-init base model, saved (hub and bundled bases are not copied)

`depth_lora.json` carries `format_version`; a folder written by a newer depth-lora with a format
this one does not know is refused with a one-line error instead of being misread.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from depth_lora.data.split import load_split, save_split
from depth_lora.errors import DataError, ModelError
from depth_lora.runs.task import task_of

# 2: OpenVINO export folders; 3: completion runs (--task complete). An older depth-lora refuses
# either in one line instead of misreading it.
FORMAT_VERSION = 3
META_FILE = "depth_lora.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.json"
RUN_CONFIG_FILE = "train_config.json"
CARD_FILE = "README.md"
STAGES_FILE = "stages.json"  # where each stage ran its model (training.stages.StageLog)
BASE_MODEL_DIR = "base_model"  # a random-init base model, saved beside the adapter
CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's checkpoint folders


def _write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


# Losses whose predictions are meaningful only after a per-image scale and shift (the record says
# so to evaluation, which reports such runs aligned; training.losses names the same losses).
SCALE_INVARIANT_LOSSES = ("ssi",)
# Keys that only some folders carry (merged, exported, in-memory bundles; optimizer_groups: runs of
# this version): written only when set, so an older record writes back unchanged.
_DERIVED_KEYS = ("warning", "merged", "merged_from", "format", "onnx_file", "openvino_file", "exported_from",
                 "export", "zero_shot", "model_info", "optimizer_groups", "completion")
# The formats of `depth-lora export` folders (RunRecord.format).
EXPORT_FORMATS = ("onnx", "openvino")
EXPORT_FORMAT_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO"}  # as messages name them
_DEFAULTS_LEFT_OUT = {"task": "depth"}  # written only when not the default, as before completion runs


@dataclass
class RunRecord:
    """What a run is: the typed form of `depth_lora.json`, read by attribute everywhere.

    Written by training (and by merge and export for their folders), read by predict, complete,
    evaluate and export. Keys this version does not know are kept in `extra` and written back.
    """

    base_model: str
    task: str = "depth"  # "depth": a monocular model; "complete": a completion model (reads depth too)
    completion: dict | None = None  # a completion run's settings (tasks.completion.CompletionTask.build)
    labels: dict = field(default_factory=dict)  # LabelScheme.to_dict(): kind and its mm range; {}: none
    image_size_hw: tuple[int, int] | None = None  # the model's input size (H, W)
    finetune: str = "lora"  # "full": the folder holds a whole model (config.json), not an adapter
    pretrained: bool = False
    base_model_dir: str | None = None  # a random-init base saved beside the adapter
    head: dict | None = None  # {"type": "relative" | "metric", "max_depth": m, "converted": bool}
    recipe: str | None = None
    recipe_line: str | None = None
    label_percentiles: list[float] | None = None
    zero_shot_calibration: dict | None = None  # Calibration.to_dict(): the baseline's scale and shift
    split_leaky: bool = False
    train_depth_mean_mm: float | None = None  # the constant baseline
    split_file: str = SPLIT_FILE
    camera: dict | None = None  # {"size_hw": [H, W], "intrinsics": [fx, fy, cx, cy]} of the captures
    data: str | None = None
    depth_unit: str = "mm"
    precision: str | None = None
    versions: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the resolved TrainConfig
    best_checkpoint: str | None = None
    global_step: int | None = None
    optimizer_groups: list[dict] | None = None  # each parameter group: name, parameters, lr, weight decay
    warning: str | None = None  # DEMO_MODEL_WARNING for runs from the bundled demo model
    merged: bool = False
    merged_from: str | None = None
    format: str | None = None  # one of EXPORT_FORMATS: an export folder
    onnx_file: str | None = None  # an ONNX export's graph (the int8 one when it was quantized)
    openvino_file: str | None = None  # an OpenVINO export's IR, or the one beside an ONNX export's graph
    exported_from: str | None = None
    export: dict | None = None  # the export's parity report, opset and runtime versions
    zero_shot: bool = False  # an in-memory record of a published model used without an adapter
    model_info: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size_hw is not None:
            self.image_size_hw = tuple(int(v) for v in self.image_size_hw)

    @property
    def loss(self) -> str | None:
        return self.config.get("loss")

    @property
    def scale_invariant(self) -> bool:
        """Trained with a scale-and-shift-invariant loss: its depth is meaningful aligned only."""
        return self.loss in SCALE_INVARIANT_LOSSES

    @property
    def lora_bias(self) -> str:
        return self.config.get("lora_bias", "none")

    @property
    def group_by(self) -> str:
        return self.config.get("group_by", "session")

    @property
    def head_type(self) -> str:
        return (self.head or {}).get("type", "relative")

    @property
    def whole_model(self) -> bool:
        """The folder holds a whole model (merged, or fully fine-tuned), not an adapter."""
        return self.merged or self.finetune == "full"

    @property
    def is_export(self) -> bool:
        """The folder holds a model exported by `depth-lora export` (ONNX, OpenVINO), not PyTorch weights."""
        return self.format in EXPORT_FORMATS

    @property
    def model_file(self) -> str | None:
        """An export folder's model file, the one its runtime loads by default."""
        return self.openvino_file if self.format == "openvino" else self.onnx_file

    def derived(self, **changes) -> RunRecord:
        """A copy with `changes` (a merged or exported folder's record)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["image_size_hw"] = list(self.image_size_hw) if self.image_size_hw else None
        for key in _DERIVED_KEYS:
            if not out[key]:
                del out[key]
        for key, default in _DEFAULTS_LEFT_OUT.items():
            if out[key] == default:
                del out[key]
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, payload: dict, source: str | Path = META_FILE) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in payload.items() if k in names}
        if "base_model" not in known:
            raise ModelError(f"{source}: no 'base_model', so not a run record")
        extra = {k: v for k, v in payload.items() if k not in names and k != "format_version"}
        return cls(**known, extra=extra)


def read_record(folder: str | Path) -> RunRecord:
    """The run record (`depth_lora.json`) of an output folder, its format version checked.

    Raises ModelError (one line, naming the folder) if the folder is missing, is not a depth-lora
    output folder, or was written in a format newer than this version of depth-lora reads.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: adapter folder does not exist")
    path = folder / META_FILE
    if not path.is_file():
        raise ModelError(
            f"{folder}: no {META_FILE}, so not a depth-lora output folder (train one with `depth-lora train`)"
        )
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise ModelError(f"{path}: expected a JSON object")
    version = payload.get("format_version", 1)  # the first folders wrote 1 as well
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path}: format_version {version!r} is newer than this depth-lora reads "
            f"(up to {FORMAT_VERSION}); upgrade depth-lora to use this folder"
        )
    return RunRecord.from_dict(payload, path)


def record_path(folder: str | Path) -> Path:
    return Path(folder) / META_FILE


def export_format(folder: str | Path) -> str | None:
    """The format of a depth-lora export folder ("onnx", "openvino"); None for a training run's folder
    or anything unreadable."""
    try:
        record = read_record(folder)
    except ModelError:
        return None
    return record.format if record.is_export else None


def write_record(folder: str | Path, record: RunRecord) -> Path:
    """Write `depth_lora.json`, stamped with the oldest format version that reads it: its task's
    (3 for a completion run), at least 2 for an OpenVINO export (which depth-lora before them would
    misread as a monocular training folder)."""
    version = max(task_of(record).format_version, 2 if record.format == "openvino" else 1)
    return _write_json(Path(folder) / META_FILE, {"format_version": version, **record.to_dict()})


def split_path(folder: str | Path, record: RunRecord | None = None) -> Path:
    """Where the run's split is (the name recorded in depth_lora.json, split.json by default)."""
    return Path(folder) / (record.split_file if record else SPLIT_FILE)


def read_split(folder: str | Path, record: RunRecord | None = None) -> dict[str, list[str]] | None:
    """The run's train / val / test keys, or None if the folder has no split file."""
    path = split_path(folder, record)
    return load_split(path) if path.is_file() else None


def write_split(folder: str | Path, split: dict[str, list[str]], **info) -> Path:
    return save_split(split, Path(folder) / SPLIT_FILE, **info)


def read_metrics(folder: str | Path) -> dict | None:
    path = Path(folder) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_metrics(folder: str | Path, metrics: dict) -> Path:
    return _write_json(Path(folder) / METRICS_FILE, metrics)


def write_stages(folder: str | Path, stages: dict) -> Path:
    return _write_json(Path(folder) / STAGES_FILE, stages)


def read_stages(folder: str | Path) -> dict | None:
    """The run's stages.json (None for a run of a version before it)."""
    path = Path(folder) / STAGES_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_run_config(folder: str | Path) -> dict | None:
    path = Path(folder) / RUN_CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_run_config(folder: str | Path, config: dict) -> Path:
    return _write_json(Path(folder) / RUN_CONFIG_FILE, config)


def is_run_folder(folder: str | Path) -> bool:
    """True if a depth-lora run wrote this folder (it holds train_config.json)."""
    return (Path(folder) / RUN_CONFIG_FILE).is_file()


def trained_no_step(folder: str | Path) -> bool:
    """True for a run folder whose run stopped before its first checkpoint and never finished: a
    start that failed (interrupted while loading, say), not a run worth keeping."""
    folder = Path(folder)
    return (is_run_folder(folder) and not (folder / META_FILE).is_file()
            and not any(folder.glob(f"{CHECKPOINT_PREFIX}*")))


def check_new_folder(folder: str | Path, what: str) -> None:
    """Refuse to write `what` into a folder that exists and holds anything: a user's files are never
    overwritten or mixed with ours."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(folder, f"output folder is not empty; choose a new folder for {what}")


def copy_run_records(source: str | Path, target: str | Path, record: RunRecord) -> None:
    """Copy what a derived folder (a merged model) needs from its run: the split (so `evaluate`
    finds the held-out captures), the metrics and a saved random-init base (the zero-shot rows)."""
    source, target = Path(source), Path(target)
    for path in (split_path(source, record), source / METRICS_FILE):
        if path.is_file():
            shutil.copy2(path, target / path.name)
    if record.base_model_dir:
        shutil.copytree(source / record.base_model_dir, target / record.base_model_dir)
