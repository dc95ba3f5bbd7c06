"""The shopee-match command: one clear line on error, exit codes."""

from __future__ import annotations

import pandas as pd
import pytest

from shopee_match.cli import main
from shopee_match.data.paths import dataset_dir


def test_demo_command_writes_named_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHOPEE_MATCH_DATA", str(tmp_path))
    assert main(["demo", "--size", "30", "--seed", "3"]) == 0
    assert len(pd.read_csv(tmp_path / "demo-30" / "train.csv")) == 30
    assert "demo dataset ready" in capsys.readouterr().out


def test_download_without_credentials_exits_2_with_help(tmp_path, monkeypatch, capsys):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert main(["download", "--dest", str(tmp_path / "shopee")]) == 2
    err = capsys.readouterr().err
    assert "KaggleCredentialsError" in err and "kaggle.json" in err


def test_report_rejects_malformed_param(capsys):
    assert main(["report", "-p", "DATASET"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_unknown_dataset_name_says_what_is_known():
    with pytest.raises(ValueError, match="demo-tiny"):
        dataset_dir("no-such-dataset")


@pytest.mark.parametrize("command", ["submit", "dedupe"])
def test_python_dash_m_runs_every_command(command):
    """``python -m shopee_match.cli`` builds the whole parser (helpers defined before use)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "shopee_match.cli", command, "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--engine" in out.stdout and "--columns" in out.stdout


@pytest.mark.parametrize("content, problem", [
    ("{'username': 'me'", "is not valid JSON"),
    ('{"username": "me"}', "has no key"),
    ('["me", "secret"]', "holds a list"),
])
def test_download_with_a_malformed_kaggle_json_names_the_file(tmp_path, monkeypatch, capsys,
                                                              content, problem):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "kaggle.json").write_text(content)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(folder))
    assert main(["download", "--dest", str(tmp_path / "shopee")]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'kaggle.json'} cannot be used: it {problem}" in err
    assert "No Kaggle API credentials found" not in err


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_a_recall_outside_0_1_is_refused_naming_the_option(value, capsys):
    with pytest.raises(SystemExit):
        main(["dedupe", "catalog.csv", "--recall", value])
    assert f"--recall: must be in (0, 1], got {value}" in capsys.readouterr().err
