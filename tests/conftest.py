"""Shared fixtures: a tiny generated dataset, written once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data folder holding the ``demo-tiny`` dataset (generated once)."""
    from shopee_match.data.demo import generate_demo

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


@pytest.fixture(scope="session", autouse=True)
def _session_artifacts(tmp_path_factory):
    """Tests never write into the project's artifacts/ (exported ONNX graphs, caches): session
    folders, unless a test points elsewhere (``tiny_env`` sets its own artifacts)."""
    names = ("SHOPEE_MATCH_ARTIFACTS", "SHOPEE_MATCH_ONNX")
    old = {name: os.environ.get(name) for name in names}
    for name in names:  # exported graphs depend on the weights only: shared by all tests
        os.environ[name] = str(tmp_path_factory.mktemp(name.lower()))
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """Register a tiny randomly initialised OpenCLIP config (no download)."""
    import open_clip

    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / "tiny-clip-test.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder / "tiny-clip-test.json")
    return "open_clip:tiny-clip-test:none"
