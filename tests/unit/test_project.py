"""Project conventions: notebooks committed clean, one parameters cell, README/CI/conda in step."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_notebooks_are_numbered_in_order_from_00():
    numbers = [int(p.stem[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(len(NOTEBOOKS))) and len(numbers) >= 7, [p.stem for p in NOTEBOOKS]


def test_git_ignores_no_source_or_test_file():
    """A source file that .gitignore matches (``data/`` once hid src/shopee_match/data/) never
    reaches a clean clone."""
    import subprocess

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    skip = {"__pycache__", ".ipynb_checkpoints"}  # caches git rightly ignores
    files = [str(p.relative_to(ROOT))
             for folder in ("src/shopee_match", "tests", "benchmarks", "notebooks")
             for p in (ROOT / folder).rglob("*") if p.is_file() and not skip & set(p.parts)]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT,
                             input="\n".join(files), capture_output=True, text=True).stdout
    assert ignored.split() == [], "fix .gitignore: it hides these from git"


def test_the_makefile_points_only_at_files_the_repo_has():
    """Files a Makefile comment names (``see X.md``) exist in the repository."""
    named = re.findall(r"see ([\w./-]+\.\w+)", (ROOT / "Makefile").read_text())
    assert all((ROOT / name).is_file() for name in named), named


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_and_with_cell_ids(path):
    missing = [i for i, c in enumerate(json.loads(path.read_text())["cells"]) if "id" not in c]
    assert not missing, (f"{path.name} cells {missing} have no id, which nbformat 4.5 needs "
                         "(papermill warns of it): give each a unique one")
    nb = nbformat.read(str(path), as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {i} has outputs: clear them"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_cell_conventions(path):
    nb = nbformat.read(str(path), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "colab-badge" in nb.cells[0].source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    lines = [ln for ln in params[0].source.splitlines() if ln.strip()]
    for stmt in ast.parse(params[0].source).body:  # plain literals, no I/O, no derived values
        assert isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
        ast.literal_eval(stmt.value)
    assert all("#" in ln for ln in lines), "one comment per parameter"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "google.colab" in code[0].source
    assert "record(" in code[-1].source, "the last cell records the key numbers"
    assert "sys.path" not in "".join(c.source for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_sees_every_parameter(path):
    import papermill as pm

    nb = nbformat.read(str(path), as_version=4)
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    names = {stmt.targets[0].id for stmt in ast.parse(cell.source).body}
    assert set(pm.inspect_notebook(str(path))) == names, "papermill could not parse a line"


def test_profiles_only_use_declared_parameters():
    import papermill as pm

    declared = set().union(*(pm.inspect_notebook(str(p)) for p in NOTEBOOKS))
    profiles = yaml.safe_load((ROOT / "notebooks" / "profiles.yaml").read_text())
    assert {"ci", "demo"} <= set(profiles)
    for name, values in profiles.items():
        assert set(values) <= declared, f"profile {name} sets undeclared parameters"


def test_environment_yml_in_step_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[dev]" in pip and "dev" in project["optional-dependencies"]
    torch_pins = re.search(r"^TORCH\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert set(torch_pins.group(1).split()) <= set(pip), "same torch pins as the Makefile"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make report" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_lists_every_notebook_in_one_table():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| # | notebook | what it shows | |")
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    listed = [p.stem for p in NOTEBOOKS if any(f"[`{p.stem}`]" in row for row in table)]
    assert listed == [p.stem for p in NOTEBOOKS], "a notebook is missing or the table is split"
