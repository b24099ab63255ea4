"""The README's example commands write only where git does not look: a clean clone stays clean."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITING_OPTIONS = ("--out", "--output", "--json", "--csv", "--plots")


def example_outputs() -> list[tuple[str, str]]:
    """(command, path) for every path a README example's depth-lora command writes."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#")[0].replace("[", " ").replace("]", " "))
            if "depth-lora" not in words:
                continue
            for option, value in zip(words, words[1:], strict=False):
                if option in WRITING_OPTIONS and not value.startswith("-"):
                    found.append((line.strip(), value))
    return found


def test_every_readme_example_writes_inside_a_git_ignored_folder_or_outside_the_clone():
    outputs = example_outputs()
    assert len(outputs) >= 12  # the examples are there to check (train, evaluate, predict, export, ...)
    for command, path in outputs:
        if Path(path).is_absolute():
            assert not Path(path).resolve().is_relative_to(ROOT), command
            continue
        # A folder (--out, --output, --plots) is checked by a file it would hold.
        written = path if Path(path).suffix in (".json", ".csv") else f"{path.rstrip('/')}/a_written_file"
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", written], cwd=ROOT)
        assert ignored.returncode == 0, f"{written} is not ignored by git: {command}"


def test_a_path_written_into_the_repository_root_would_be_caught():
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "predictions/a.npy"], cwd=ROOT)
    assert ignored.returncode == 1  # the rule above is not vacuous: this one is in the root
