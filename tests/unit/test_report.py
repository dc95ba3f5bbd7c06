"""The report runner on throw-away notebooks (executes real kernels)."""

from __future__ import annotations

import json

import nbformat
import pytest
import yaml

from shopee_match.cli import main
from shopee_match.report import run_report

pytestmark = pytest.mark.notebooks


def make_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell("N = 1  # a number")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    make_notebook(folder / "00_ok.ipynb",
                  "from shopee_match.notebook import record\nrecord('double', N * 2)")
    make_notebook(folder / "01_fail.ipynb", "raise ValueError('boom ' + str(N))")
    make_notebook(folder / "02_dies.ipynb", "import os\nos._exit(3)")
    (folder / "profiles.yaml").write_text(yaml.safe_dump({"t": {"N": 5}}))
    return folder


def test_runs_all_reports_failure_and_still_writes_html(notebooks, tmp_path):
    out = tmp_path / "out"
    runs = run_report("t", notebooks_dir=notebooks, out_dir=out, progress=False)
    assert [(r.name, r.status) for r in runs] == [("00_ok", "ok"), ("01_fail", "failed"),
                                                  ("02_dies", "failed")]
    assert "Dead" in runs[2].error and runs[2].html.is_file()
    assert runs[0].records == {"double": 10}
    assert "boom 5" in runs[1].error
    assert "boom 5" in (out / "01_fail.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["notebooks"]["00_ok"]["records"]["double"] == 10
    index = (out / "index.html").read_text()
    assert "00_ok.html" in index and "01_fail.html" in index and "double = 10" in index


def test_overrides_hide_code_and_only(notebooks, tmp_path):
    out = tmp_path / "out"
    runs = run_report("t", {"N": 21}, notebooks_dir=notebooks, out_dir=out, only=["00"],
                      hide_code=True, progress=False)
    assert [r.name for r in runs] == ["00_ok"] and runs[0].records == {"double": 42}
    assert "record(&#39;double&#39;" not in (out / "00_ok.html").read_text()
    with pytest.raises(ValueError, match="No notebook has parameter"):
        run_report("t", {"M": 1}, notebooks_dir=notebooks, out_dir=out)
    with pytest.raises(ValueError, match="Unknown profile"):
        run_report("nope", notebooks_dir=notebooks, out_dir=out)


def test_cli_exits_nonzero_naming_the_failed_notebook(notebooks, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHOPEE_MATCH_HOME", str(tmp_path))
    (tmp_path / "pyproject.toml").write_text("")
    assert main(["report", "--profile", "t", "--out", str(tmp_path / "o")]) == 1
    assert "failed notebooks: 01_fail, 02_dies" in capsys.readouterr().err
