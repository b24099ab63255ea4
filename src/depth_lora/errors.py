"""The exceptions the package raises for bad input; the CLI prints them as one line."""

from __future__ import annotations

from pathlib import Path


class DepthLoraError(Exception):
    """Base class: a problem the user can fix (bad files, bad options, unreachable model)."""


class DataError(DepthLoraError):
    """A capture or data folder cannot be used. `path` names the offending file or folder."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ModelError(DepthLoraError):
    """A model or adapter cannot be built or loaded."""


class ConfigError(DepthLoraError):
    """An option or config file value is invalid."""
