"""A training config from a YAML or JSON file (`depth-lora train --config FILE`)."""

from __future__ import annotations

import json
from pathlib import Path

from depth_lora.errors import ConfigError
from depth_lora.training.config import coerce_field, field_names


def read_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into a dict of TrainConfig fields (names with - or _)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as exc:  # yaml and json raise many kinds; all mean "not parseable"
        raise ConfigError(f"{path}: not a valid YAML/JSON file ({exc.__class__.__name__})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - field_names())
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)}")
    try:
        return {k: coerce_field(k, v) for k, v in values.items()}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
