"""Candidates: saved with their files, ranked by val F1, skipped with a reason when unusable."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from shopee_match.apply.candidates import (
    NoCandidateError,
    comparable_candidates,
    leaderboard,
    load_candidate,
    pick_candidate,
    save_candidate,
    save_version,
)
from shopee_match.match.config import MatchConfig, SecondStage
from shopee_match.match.selection import Tuned

CONFIG = MatchConfig(encoders={"image": "timm:x:none", "text": "sbert:y"},
                     fusion_weights={"image": 1.0, "text": 1.0}, value=0.5)


def save(root, name, val, test, fingerprint="fp1", split_seed=0, **kw):
    return save_candidate(name, kw.pop("config", CONFIG), val, test, dataset="demo",
                          fingerprint=fingerprint, split_seed=split_seed, notebook="test",
                          root=root, **kw)


def test_save_and_load_round_trip_with_the_second_stage_model(tmp_path):
    import pandas as pd

    from shopee_match.match.second_stage import PairClassifier

    features = pd.DataFrame({"sim": [0.0, 1.0, 0.1, 0.9]})
    model = PairClassifier.fit(features, np.array([0, 1, 0, 1], bool))
    config = CONFIG.replace(second_stage=SecondStage("pair_classifier", 0.4, "pair.joblib"))
    saved = save(tmp_path, "03_thresholds", 0.8, 0.7, config=config, test_f1_upper=0.75,
                 files={"pair.joblib": model})
    back = load_candidate(tmp_path / "03_thresholds")
    assert back.config == config and back.val_f1 == 0.8 and back.test_f1_upper == 0.75
    assert back.files == ["pair.joblib"] and back.created == saved.created
    scorer = back.load_scorer()
    assert isinstance(scorer, PairClassifier)
    probe = pd.DataFrame({"sim": [0.95, 0.05]})
    np.testing.assert_array_equal(scorer.probabilities(probe), model.probabilities(probe))
    assert scorer.probabilities(probe)[0] > 0.5 > scorer.probabilities(probe)[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["03_thresholds"]  # no staging left


def test_the_high_precision_point_is_saved_and_a_broken_one_is_refused(tmp_path):
    point = {"threshold": 0.83, "val precision": 0.951, "val recall": 0.64,
             "test precision": 0.98, "test recall": 0.66, "min_precision": 0.95}
    assert load_candidate(save(tmp_path, "hp", 0.8, 0.7, high_precision=point).folder
                          ).high_precision == point
    assert load_candidate(save(tmp_path, "plain", 0.8, 0.7).folder).high_precision is None
    path = tmp_path / "hp" / "candidate.json"
    meta = json.loads(path.read_text())
    meta["high_precision"] = {"threshold": "high"}
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="high_precision needs a numeric threshold"):
        load_candidate(tmp_path / "hp")
    meta["high_precision"] = 0.83
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="high_precision is 0.83, which is not a dict"):
        load_candidate(tmp_path / "hp")


def test_saving_needs_the_second_stage_file_and_copies_paths(tmp_path):
    config = CONFIG.replace(second_stage=SecondStage("pair_classifier", 0.4, "pair.joblib"))
    with pytest.raises(ValueError, match="needs 'pair.joblib'"):
        save(tmp_path, "x", 0.8, 0.7, config=config)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.bin").write_bytes(b"123")
    c = save(tmp_path / "c", "04_finetuned", 0.8, 0.7, files={"model": weights})
    assert (c.folder / "model" / "model.bin").read_bytes() == b"123"
    with pytest.raises(ValueError, match="candidate name"):
        save(tmp_path, "../escape", 0.8, 0.7)


def test_saving_again_replaces_the_candidate(tmp_path):
    old = tmp_path / "old.bin"
    old.write_bytes(b"1")
    save(tmp_path, "03_thresholds", 0.5, 0.5, files={"old.bin": old})
    again = save(tmp_path, "03_thresholds", 0.6, 0.55)
    assert again.val_f1 == 0.6 and not (again.folder / "old.bin").exists()
    with pytest.raises(TypeError, match="save\\(path\\) method, not a dict"):
        save(tmp_path, "03_thresholds", 0.6, 0.55, files={"x.joblib": {"a": 1}})
    assert load_candidate(tmp_path / "03_thresholds").val_f1 == 0.6  # the old one is intact


def test_pick_takes_the_best_val_not_the_best_test(tmp_path):
    save(tmp_path, "03_thresholds", 0.80, 0.90)
    save(tmp_path, "04_finetuned", 0.85, 0.70)
    picked, board = pick_candidate("fp1", 0, root=tmp_path)
    assert picked.name == "04_finetuned"
    assert board["candidate"].tolist() == ["04_finetuned", "03_thresholds"]
    forced, _ = pick_candidate("fp1", 0, name="03_thresholds", root=tmp_path)
    assert forced.name == "03_thresholds"


def test_equal_val_f1_goes_to_the_first_name(tmp_path):
    save(tmp_path, "b_second", 0.8, 0.9)
    save(tmp_path, "a_first", 0.8, 0.1)
    assert pick_candidate("fp1", 0, root=tmp_path)[0].name == "a_first"


def test_candidates_chosen_on_different_figures_are_not_ranked_against_each_other(
        tmp_path, monkeypatch, caplog):
    """A row-wise F1 of 0.95 is not better than a pair F1 of 0.86: with both saved, no
    candidate is "the best on val" (a clear error naming each), a named one is used, and
    notebook 05 blocks with the frozen embeddings rather than compare 04's with 03's."""
    import logging

    from shopee_match.apply.choosing import blocking_candidate

    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path))
    root = tmp_path / "candidates"
    save(root, "03_thresholds", 0.86, 0.85, metric="pair_f1")
    save(root, "04_finetuned", 0.95, 0.94)  # row_f1
    with pytest.raises(NoCandidateError, match=r"(?s)different figures.*04_finetuned: val "
                       r"0\.9500 as row_f1, link auto.*03_thresholds: val 0\.8600 as pair_f1"
                       r".*--candidate"):
        pick_candidate("fp1", 0, root=root)
    assert pick_candidate("fp1", 0, "03_thresholds", root=root)[0].metric == "pair_f1"
    board = leaderboard("fp1", 0, root)
    assert board.set_index("candidate")["metric"].to_dict() == {"03_thresholds": "pair_f1",
                                                                "04_finetuned": "row_f1"}
    assert set(board["link"]) == {"auto"}
    with caplog.at_level(logging.INFO, "shopee_match.apply.choosing"):
        assert blocking_candidate("fp1", 0) is None  # 04's 0.95 would have "won"
    assert "chosen on different figures" in caplog.text
    # the same metric, another link mode: still not comparable
    save(root, "04_finetuned", 0.95, 0.94, metric="pair_f1", link="all")
    with pytest.raises(NoCandidateError, match="link all"):
        pick_candidate("fp1", 0, root=root)
    save(root, "04_finetuned", 0.90, 0.94, metric="pair_f1")  # comparable again
    assert pick_candidate("fp1", 0, root=root)[0].name == "04_finetuned"
    assert blocking_candidate("fp1", 0).name == "04_finetuned"


def test_only_candidates_chosen_on_the_same_figures_are_shown_beside_a_new_one(tmp_path):
    """Notebooks 04 and 05 list saved candidates beside their steps: only those usable here
    and chosen on the same metric and link mode, in the order asked."""
    root = tmp_path / "candidates"
    save(root, "03_thresholds", 0.86, 0.85, metric="pair_f1", link="across")
    save(root, "04_finetuned", 0.88, 0.87, metric="pair_f1", link="across")
    save(root, "05_rerank", 0.90, 0.89, metric="pair_f1", link="across")
    names = ["04_finetuned", "03_thresholds", "05_rerank", "06_nothing"]

    def shown(metric="pair_f1", link="across", fingerprint="fp1"):
        return [c.name for c in comparable_candidates(fingerprint, 0, names, metric, link,
                                                      root)]

    assert shown() == ["04_finetuned", "03_thresholds", "05_rerank"]
    assert shown(metric="row_f1") == [] and shown(link="all") == []
    assert shown(fingerprint="other data") == []
    save(root, "04_finetuned", 0.88, 0.87, metric="row_f1", link="across")
    (root / "05_rerank" / "candidate.json").write_text("{broken")
    assert shown() == ["03_thresholds"]


def test_unusable_candidates_are_skipped_with_a_reason(tmp_path):
    save(tmp_path, "03_thresholds", 0.70, 0.70)
    save(tmp_path, "other_data", 0.99, 0.99, fingerprint="fp2")
    save(tmp_path, "other_split", 0.98, 0.98, split_seed=1)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w")
    gone = save(tmp_path, "missing_file", 0.97, 0.97, files={"m.joblib": weights})
    (gone.folder / "m.joblib").unlink()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "candidate.json").write_text("{not json")
    (tmp_path / "a_list").mkdir()
    (tmp_path / "a_list" / "candidate.json").write_text("[1, 2]")
    legacy = save(tmp_path, "legacy", 0.96, 0.96)
    meta = json.loads((legacy.folder / "candidate.json").read_text())
    meta["config"] = {"fusion_weights": {"image": 1.0}, "profile": "offline",
                      "chosen_on": {}, "value": 0.5}
    (legacy.folder / "candidate.json").write_text(json.dumps(meta))

    picked, board = pick_candidate("fp1", 0, root=tmp_path)
    assert picked.name == "03_thresholds"
    reasons = dict(zip(board["candidate"], board["reason"]))
    assert reasons["03_thresholds"] == ""
    assert "made from other data" in reasons["other_data"] and "fp2" in reasons["other_data"]
    assert "split seed 1, not 0" in reasons["other_split"]
    assert "missing file(s) ['m.joblib']" in reasons["missing_file"]
    assert "not valid JSON" in reasons["broken"]
    assert "holds a list, not a candidate" in reasons["a_list"]
    assert "re-run notebooks/03" in reasons["legacy"]
    assert board["usable"].tolist()[0] and not board["usable"].tolist()[1:].count(True)
    with pytest.raises(NoCandidateError, match="other_data.*made from other data"):
        pick_candidate("fp1", 0, name="other_data", root=tmp_path)


def test_no_usable_candidate_says_which_notebook_to_run(tmp_path):
    with pytest.raises(NoCandidateError, match="03_threshold_f1_sweep"):
        pick_candidate("fp1", 0, root=tmp_path / "none")
    save(tmp_path, "other", 0.9, 0.9, fingerprint="fp2")
    with pytest.raises(NoCandidateError, match="(?s)other: made from other data.*notebooks/03"):
        pick_candidate("fp1", 0, root=tmp_path)
    with pytest.raises(NoCandidateError, match="no candidate named 'nope'"):
        pick_candidate("fp1", 0, name="nope", root=tmp_path)
    assert leaderboard(root=tmp_path)["usable"].tolist() == [True]  # no filter given


def test_submit_skips_candidates_that_are_unsafe_broken_or_mistyped(tiny_env, tmp_path, capsys):
    """Through the CLI: candidates that look better on val but name a file outside their
    folder, hold a model file changed since saving, carry a wrong type or a threshold no
    similarity reaches are listed with the reason and skipped; the good one submits, and the
    submission is readable by others (not 0600)."""
    import os
    import shutil

    import pandas as pd

    from shopee_match.cli import main
    from shopee_match.data.datasets import train_fingerprint
    from shopee_match.match.second_stage import PairClassifier

    fingerprint = train_fingerprint("demo-tiny")
    text_only = MatchConfig(encoders={"text": "sbert:pypi-minilm"},
                            fusion_weights={"text": 1.0}, k=5, value=0.8)

    def good(name, val, **kw):
        return save_candidate(name, kw.pop("config", text_only), val, 0.5, dataset="demo-tiny",
                              fingerprint=fingerprint, split_seed=0, notebook="test", **kw)

    def edit(name, change):
        path = good(name, 0.95).folder / "candidate.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))

    good("plain", 0.6)
    staged = text_only.replace(second_stage=SecondStage("pair_classifier", 0.5, "pc.joblib"))
    classifier = PairClassifier.fit(pd.DataFrame({"x": [0.0, 1.0, 0.2, 0.9]}),
                                    np.array([0, 1, 0, 1], bool))
    garbled = good("garbled_model", 0.99, config=staged, files={"pc.joblib": classifier})
    (garbled.folder / "pc.joblib").write_bytes(b"not a pickle at all")
    shutil.copytree(garbled.folder, garbled.folder.parent / "escape")
    meta = json.loads((garbled.folder.parent / "escape" / "candidate.json").read_text())
    meta["config"]["second_stage"]["file"] = "../../../../etc/hostname"
    (garbled.folder.parent / "escape" / "candidate.json").write_text(json.dumps(meta))
    edit("text_f1", lambda m: m.update(val_f1="0.99"))
    edit("text_threshold", lambda m: m["config"].update(value="high"))
    edit("far_threshold", lambda m: m["config"].update(value=7.5))

    old = os.umask(0o022)
    try:
        assert main(["submit", "--dataset", "demo-tiny", "--out", str(tmp_path / "s.csv")]) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    assert "using candidate plain (best val F1)" in out
    board = out.split("using candidate")[0]
    for name, reason in (("garbled_model", "changed since it was saved"),
                         ("escape", "not inside the candidate folder"),
                         ("text_f1", "val_f1 is '0.99', which is not a Real"),
                         ("text_threshold", "value must be a finite number"),
                         ("far_threshold", "lies between -1 and 1")):
        line = next(row for row in board.splitlines() if row.strip().startswith(name))
        assert reason in line, line
    assert (tmp_path / "s.csv").stat().st_mode & 0o777 == 0o644


def test_versions_are_saved_beside_each_other_and_ranked_on_val(tmp_path):
    from shopee_match.apply.candidates import next_version

    first = save(tmp_path, "05_rerank", 0.80, 0.78)
    assert first.version == 1 and first.parent is None
    assert next_version("05_rerank", tmp_path) == ("05_rerank.v2", 2)
    name, version = next_version("05_rerank", tmp_path)
    second = save(tmp_path, name, 0.83, 0.79, version=version, parent="05_rerank")
    assert (second.version, second.parent) == (2, "05_rerank")
    assert next_version("05_rerank.v2", tmp_path) == ("05_rerank.v3", 3)
    relabelled = save(tmp_path, "05_rerank.v3", 0.82, 0.8, version=3, parent="05_rerank",
                      labels="abc")
    assert relabelled.labels == "abc"
    # retrained again from the same parent on the same labels: that version is replaced
    assert next_version("05_rerank", tmp_path, "05_rerank", "abc") == ("05_rerank.v3", 3)
    assert next_version("05_rerank", tmp_path, "05_rerank", "other") == ("05_rerank.v4", 4)
    shutil.rmtree(relabelled.folder)
    tuned = Tuned(CONFIG.replace(value=0.7), 0.84, 0.8, 0.81)
    saved = save_version(second, tuned, {}, labels="def", notebook="07", root=tmp_path)
    assert (saved.name, saved.version, saved.parent, saved.labels) == (
        "05_rerank.v3", 3, "05_rerank.v2", "def")  # a version of a version: the next number
    assert saved.config.value == 0.7 and saved.fingerprint == second.fingerprint
    shutil.rmtree(saved.folder)
    (tmp_path / "05_rerank.v7").mkdir()  # not a saved candidate: does not count
    assert next_version("05_rerank", tmp_path)[1] == 3
    board = leaderboard("fp1", 0, tmp_path)
    assert board[["candidate", "version"]].values.tolist()[:2] == [["05_rerank.v2", 2],
                                                                   ["05_rerank", 1]]
    assert pick_candidate("fp1", 0, root=tmp_path)[0].name == "05_rerank.v2"
    meta = json.loads((second.folder / "candidate.json").read_text())
    meta["version"] = "two"
    (second.folder / "candidate.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version is 'two'"):
        load_candidate(second.folder)


def test_each_version_is_logged_to_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from shopee_match.apply.tracking import log_version, logged_versions

    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = save(tmp_path / "c", "05_rerank", 0.80, 0.78)
    (first.folder / "model.bin").write_bytes(b"weights")
    second = save(tmp_path / "c", "05_rerank.v2", 0.83, 0.79, version=2, parent="05_rerank")
    runs = [log_version(c, params={"labels": n}, metrics={"labels_used": n})
            for c, n in ((first, 0), (second, 40))]
    assert log_version(second) == runs[1]  # logged once: the same version is not again
    table = logged_versions()
    assert table["run"].tolist() == runs
    assert table[["candidate", "version", "val_f1"]].values.tolist() == [
        ["05_rerank", 1, 0.80], ["05_rerank.v2", 2, 0.83]]
    store = tmp_path / "artifacts" / "mlruns"
    assert (store / "mlflow.db").is_file()
    logged = list(store.glob("artifacts/*/artifacts/candidate/model.bin"))
    assert [p.read_bytes() for p in logged] == [b"weights"]


def test_without_mlflow_a_version_is_saved_and_not_logged(tmp_path, monkeypatch, caplog):
    import builtins

    from shopee_match.apply.tracking import log_version

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("no mlflow here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    c = save(tmp_path, "05_rerank", 0.8, 0.7)
    assert log_version(c) is None
    assert "MLflow is not installed" in caplog.text
