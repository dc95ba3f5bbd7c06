"""Every numbered notebook runs end-to-end under papermill on the tiny demo data."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from shopee_match.report import find_notebooks, run_report

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.notebooks


@pytest.mark.parametrize("path", find_notebooks(ROOT / "notebooks"), ids=lambda p: p.stem)
def test_notebook_runs_on_tiny_data(path, tiny_env, tmp_path):
    [run] = run_report("ci", only=[path.stem], notebooks_dir=ROOT / "notebooks",
                       out_dir=tmp_path / "reports", progress=False)
    assert run.status == "ok", run.error
    assert run.html.is_file() and run.records
    nb = nbformat.read(str(run.executed), as_version=4)
    streams = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                      if o.get("output_type") == "stream")
    assert "IProgress not found" not in streams  # no tqdm widget warning in reports


def test_eda_records_match_the_data(tiny_env, tmp_path):
    [run] = run_report("ci", only=["00"], notebooks_dir=ROOT / "notebooks",
                       out_dir=tmp_path / "reports", progress=False)
    df = pd.read_csv(tiny_env / "demo-tiny" / "train.csv")
    sizes = df["label_group"].value_counts()
    assert run.records["n_postings"] == len(df)
    assert run.records["n_groups"] == len(sizes)
    assert run.records["max_group_size"] == sizes.max()
    assert run.records["n_missing_images"] == 0


def test_embedding_and_retrieval_records_are_consistent(tiny_env, tmp_path):
    runs = run_report("ci", only=["01", "02"], notebooks_dir=ROOT / "notebooks",
                      out_dir=tmp_path / "reports", progress=False)
    assert [r.status for r in runs] == ["ok", "ok"], [r.error for r in runs]
    embed, retrieval = (r.records for r in runs)
    assert embed["modalities"] == ["image", "text", "tfidf"]
    assert embed["dims"]["image"] == 1280 and embed["dims"]["text"] == 384
    for auc in embed["pair_roc_auc"].values():
        assert 0.5 < auc <= 1.0  # every modality separates products better than chance
    recall = retrieval["recall_at_k"]
    for modality, by_k in recall.items():
        values = [by_k[str(k)] for k in (1, 5, 10, 20, 50)]
        assert values == sorted(values), f"recall@K of {modality} must grow with K"
    ann = retrieval["ann_recall_vs_exact"]
    assert set(ann) >= {"ivf", "hnsw", "ivfpq"}
    assert all(0.0 <= v <= 1.0 for v in ann.values())
    assert ann["hnsw"] >= 0.9  # on 160 rows HNSW should find almost every exact neighbour


def test_threshold_sweep_saves_a_usable_configuration(tiny_env, tmp_path):
    import json

    from shopee_match.config import artifacts_dir

    [run] = run_report("ci", only=["03"], notebooks_dir=ROOT / "notebooks",
                       out_dir=tmp_path / "reports", progress=False)
    assert run.status == "ok", run.error
    steps = [row[0] for row in run.records["ablation"]]
    assert steps[1:3] == ["fused, static threshold", "dynamic threshold instead"]
    assert "pair classifier (instead of thresholds)" in steps
    assert 0.0 < run.records["best_test_f1"] <= run.records["best_test_f1_tuned_on_test"] <= 1.0
    config = json.loads((artifacts_dir() / "match_config.json").read_text())
    assert config["chosen_on"]["dataset"] == "demo-tiny" and config["fusion_weights"]


def test_submission_uses_the_saved_configuration(tiny_env, tmp_path, capsys):
    from shopee_match.cli import main
    from shopee_match.config import artifacts_dir
    from shopee_match.submission import validate_submission

    runs = run_report("ci", only=["03", "06"], notebooks_dir=ROOT / "notebooks",
                      out_dir=tmp_path / "reports", progress=False)
    assert [r.status for r in runs] == ["ok", "ok"], [r.error for r in runs]
    submission = runs[1].records
    assert 0.0 < submission["test_f1"] <= 1.0
    heldout = tiny_env / "demo-tiny-heldout"
    test_ids = pd.read_csv(heldout / "test.csv")["posting_id"]
    assert submission["n_test_postings"] == len(test_ids)
    validate_submission(artifacts_dir() / "submission.csv", test_ids)
    # the command line gives the same file and score
    assert main(["submit", "--dataset", "demo-tiny", "--out", str(tmp_path / "cli.csv")]) == 0
    assert (tmp_path / "cli.csv").read_text() == (artifacts_dir() / "submission.csv").read_text()
    assert f"{submission['test_f1']:.4f}" in capsys.readouterr().out
