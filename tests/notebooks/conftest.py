"""Notebook tests share one embedding cache (its entries are keyed by data, model and
parameters): each notebook sequence embeds demo-tiny once per session (per test worker), not
once per test. A test that needs a cold cache points ``SHOPEE_MATCH_EMBEDDINGS`` elsewhere
itself. ``run_ok`` runs notebooks on the ci profile and checks that each succeeded."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="session")
def _shared_embeddings(tmp_path_factory):
    return tmp_path_factory.mktemp("shared_embeddings")


@pytest.fixture(autouse=True)
def _embedding_cache(_shared_embeddings, monkeypatch):
    monkeypatch.setenv("SHOPEE_MATCH_EMBEDDINGS", str(_shared_embeddings))


def assert_no_widget_warning(run):
    """No tqdm "IProgress not found" warning in a report page (also with warm caches, when
    a notebook imports model libraries without embedding anything first)."""
    nb = nbformat.read(str(run.executed), as_version=4)
    streams = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                      if o.get("output_type") == "stream")
    assert "IProgress not found" not in streams, run.name


@pytest.fixture
def run_ok(tmp_path):
    """``run_ok(only, overrides)``: run notebooks on the ci profile into the test's
    ``reports/``; every one must succeed, without a widget warning, and record its peak memory."""
    from shopee_match.report import run_report

    def run(only=None, overrides=None):
        runs = run_report("ci", overrides, only=only, notebooks_dir=NOTEBOOKS,
                          out_dir=tmp_path / "reports", progress=False)
        assert [r.status for r in runs] == ["ok"] * len(runs), [r.error for r in runs if r.error]
        for one in runs:
            assert_no_widget_warning(one)
            assert 50 < one.records["peak_memory_mb"] < 64_000  # the kernel's own peak, in MiB
        return runs

    return run
