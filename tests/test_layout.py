"""The package's shape: subpackages import only downwards, privates stay private, the run record has
one owner, and nothing in the library reaches into the repository around it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "depth_lora"

# Lowest first. A module may import its own subpackage and any subpackage of a *lower* layer; two
# subpackages on one layer never import each other.
LAYERS = [
    {"errors", "text"},
    {"numeric"},
    {"data"},
    {"viz", "synthetic"},
    {"model"},
    {"runs"},
    {"inference"},
    {"evaluation"},
    {"training"},
    {"deploy"},
    {"tasks"},  # each task calls every layer below; runs.task finds them by name (task_of)
    {"bench"},
    {"cli"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
RECORD_OWNER = "runs/folder.py"


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "assets" not in p.parts)


def unit_of(path: Path) -> str:
    """The subpackage (or root module) a file belongs to: 'data', 'errors', ..."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import depth_lora...` / `from depth_lora... import` in a file,
    function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("depth_lora"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("depth_lora")]
    return found


def test_every_subpackage_and_root_module_has_a_layer():
    units = {unit_of(p) for p in modules()} - {"__init__", "__main__"}
    assert units == set(LAYER_OF), "add the new subpackage to LAYERS (and to the README's layout)"


def test_imports_run_downwards_only():
    upward = []
    for path in modules():
        unit = unit_of(path)
        if unit in ("__init__", "__main__"):
            continue  # the public face and `python -m` sit above everything
        for module, names in imported(path):
            parts = module.split(".")
            targets = [parts[1]] if len(parts) > 1 else [n for n in names if n in LAYER_OF]
            upward += [f"{path.relative_to(PACKAGE)} (layer {LAYER_OF[unit]}): {module} ({target})"
                       for target in targets if target != unit and not LAYER_OF[target] < LAYER_OF[unit]]
    assert not upward, f"imports upwards or sideways: {upward}"


def test_no_private_name_is_imported_across_modules():
    private = [f"{path.relative_to(PACKAGE)}: {m}.{n}" for path in modules() for m, names in imported(path)
               for n in names if n.startswith("_") and n != "__version__"]
    assert not private


def test_only_the_output_folder_module_parses_the_run_record():
    """depth_lora.json is named, read and written in runs/folder.py alone: others ask it for a
    RunRecord (docstrings and comments may still mention the file)."""
    readers = []
    for path in modules():
        if path.relative_to(PACKAGE).as_posix() == RECORD_OWNER:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            named = (isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and id(node) not in docstrings
                     and node.value.endswith("depth_lora.json") and " " not in node.value)
            if named or (isinstance(node, ast.Name | ast.Attribute) and "META_FILE" in ast.unparse(node)):
                readers.append(f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno}")
    assert not readers, f"depth_lora.json is read or written outside {RECORD_OWNER}: {readers}"


def test_the_library_never_reaches_into_the_source_checkout():
    for path in modules():
        text = path.read_text()
        assert "sys.path" not in text and "parents[2]" not in text, path


def test_no_module_is_over_400_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in modules()}
    long = {name: n for name, n in sizes.items() if n > 400}
    assert not long


def test_no_function_is_over_80_lines():
    import ast

    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert not long


def test_the_public_face_names_resolve_and_import_lazily():
    import subprocess
    import sys

    code = ("import sys, depth_lora; print('torch' in sys.modules); "
            "[getattr(depth_lora, n) for n in depth_lora.__all__]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_the_public_face_is_the_library_not_the_command_line():
    import depth_lora

    from_cli = sorted(n for n, module in depth_lora._PUBLIC.items() if module.startswith("depth_lora.cli"))
    assert not from_cli, f"`import depth_lora` names command-line code: {from_cli}"


def test_only_the_tasks_branch_on_the_task():
    """What differs between a monocular and a completion run is a method of its task (runs/task.py,
    tasks/): no other module asks which task a run is."""
    import re

    asks = re.compile(r"is_completer|task[\"'\])]*\s*[!=]=")
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in modules()
             if p.relative_to(PACKAGE).parts[0] != "tasks" and p.name != "task.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if asks.search(line)]
    assert not found, f"branches on the task outside the task modules: {found}"
