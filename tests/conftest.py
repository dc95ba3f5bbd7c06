"""Shared fixtures: a tiny generated dataset, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data folder holding the ``demo-tiny`` dataset (generated once)."""
    from shopee_match.demo import generate_demo

    root = tmp_path_factory.mktemp("data")
    generate_demo(root / "demo-tiny", size="tiny", progress=False)
    return root


@pytest.fixture
def tiny_env(data_root, tmp_path, monkeypatch) -> Path:
    """Point the kit's data/artifacts/reports folders at temporary ones."""
    monkeypatch.setenv("SHOPEE_MATCH_DATA", str(data_root))
    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SHOPEE_MATCH_REPORTS", str(tmp_path / "reports"))
    return data_root
