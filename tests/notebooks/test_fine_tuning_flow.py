"""Fine-tuning, reranking and review end to end on the tiny demo data (its own file, so that
parallel test workers run it beside the other notebook tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shopee_match.report import run_report

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.notebooks


def test_fine_tuning_rerank_and_review_save_candidates_submit_and_keep_every_label(
        run_ok, tiny_env, tmp_path, capsys):
    """05 and 04 each on its own (first, with no candidate saved), then 03 and 06 on the ci
    profile: 04 and 05 save candidates, the submission takes the best on val and 05's reranker
    submits from its folder alone. (That their training repeats itself is tested where it is
    cheaper: test_finetune's ...reproducible... and test_rerank's
    ...from_scratch_gives_the_same_model.)

    Then 07 (its oracle labels retrain the reranker into version 2) and 05 again, now beside
    03's and 04's candidates: labels given between the runs (in the gray-zone file and in 07's
    labels file) are kept, train-side ones are trained on, held-out ones kept as evaluation
    labels; then a hand-edited line with an extra field stops 05 with the file and line named,
    and the file is left as it was. (One test: each run of 05 costs CI about a minute.)"""
    import shutil

    from shopee_match.apply.candidates import leaderboard, load_candidate
    from shopee_match.apply.submission import validate_submission
    from shopee_match.cli import main
    from shopee_match.data.datasets import load_dataset, train_fingerprint
    from shopee_match.data.paths import artifacts_dir, candidates_dir
    from shopee_match.data.splits import split_by_group
    from shopee_match.train.labels import LabelLog, labels_path

    runs = run_ok(["05"]) + run_ok(["04"]) + run_ok(["03", "06"])
    rerank, finetune, _, submission = (r.records for r in runs)
    assert set(finetune["regimes"]) == {"joint", "text_ft", "image_ft"}
    assert all(v > 0 for v in finetune["train_speed_per_s"].values())
    assert 0.0 < finetune["best_test_f1"] <= finetune["best_test_f1_tuned_on_test"] <= 1.0
    candidate = load_candidate(candidates_dir() / "04_finetuned")
    assert not candidate.missing_files() and (candidate.folder / "models").is_dir()
    assert candidate.val_f1 == pytest.approx(finetune["best_val_f1"], abs=1e-4)
    assert set(rerank["pair_counts"]) == {"train", "stack", "val", "test"}
    assert rerank["training_pairs"]["hard negative"] > 0 and rerank["scoring_pairs_per_s"] > 0
    point = rerank["high_precision_point"]["combined, best mutual match"]
    false_merges = rerank["high_precision_val_false_merges"]  # the pairs that cost val precision
    if point is None:
        assert false_merges == {"pairs": 0, "above": 0, "same_words": 0}
    else:
        assert false_merges["pairs"] >= false_merges["same_words"] >= 0
        assert 1 - false_merges["pairs"] / false_merges["above"] == pytest.approx(
            point["val precision"], abs=1e-4)
    steps = [row[0] for row in rerank["ablation"]]
    assert "cross-encoder alone" in steps and "03_thresholds (saved)" not in steps
    candidate = load_candidate(candidates_dir() / "05_rerank")
    assert not candidate.missing_files()
    saved = rerank["high_precision_saved"]  # what `link --high-precision` cuts at
    if saved is None:
        assert candidate.high_precision is None
    else:
        assert candidate.high_precision["threshold"] == pytest.approx(saved["threshold"],
                                                                      abs=1e-4)
        assert candidate.high_precision["min_precision"] == 0.95
        assert saved["val precision"] >= 0.95
    assert candidate.val_f1 == pytest.approx(rerank["best_val_f1"], abs=1e-4)
    int8 = rerank["cross_encoder_int8"]  # kept when val F1 drops by 0.002 at most
    assert int8["pairs/s int8"] > 0 and int8["pairs/s fp32"] > 0
    if candidate.config.second_stage is not None:
        drop = int8["val F1 fp32"] - int8["val F1 int8"]  # of figures rounded to 1e-4
        assert drop <= 0.0021 if int8["used"] else drop >= 0.0019
        assert candidate.load_scorer().cross_encoder.int8 == int8["used"]
    board = leaderboard(train_fingerprint("demo-tiny"), 0)
    assert set(board["candidate"]) == {"03_thresholds", "04_finetuned", "05_rerank"}
    assert submission["candidate"] == board.loc[board["usable"], "candidate"].iloc[0]
    assert 0.0 < submission["test_f1"] <= 1.0
    gray = pd.read_csv(artifacts_dir() / "gray_zone.csv")
    assert len(gray) == rerank["gray_zone_pairs"] and "label" in gray
    # the saved reranker (cross-encoder + classifier) submits from the candidate folder alone
    assert main(["submit", "--dataset", "demo-tiny", "--candidate", "05_rerank",
                 "--out", str(tmp_path / "rerank.csv")]) == 0
    assert "using candidate 05_rerank" in capsys.readouterr().out
    heldout = pd.read_csv(tiny_env / "demo-tiny-heldout" / "test.csv")["posting_id"]
    validate_submission(tmp_path / "rerank.csv", heldout)

    [run] = run_ok(["07"], overrides={
        "CANDIDATE": "05_rerank", "QUEUE_SIZE": 40, "ORACLE_ANSWERS": 40})
    review = run.records  # 07: the oracle answered 40 pairs, the reranker was retrained
    assert review["candidate"] == "05_rerank" and review["labels"]["labelled"] == 40
    assert sum(review["labels_routed"].values()) == 40
    assert review["retrained"]["cross_encoder"].startswith("trained further on")
    assert set(review["simulation"]) == {"uncertainty", "random"}
    assert list(review["simulation"]["random"]) == ["0", "10", "20", "40"]
    version = review["version"]
    assert (version["name"], version["version"], version["parent"]) == ("05_rerank.v2", 2,
                                                                        "05_rerank")
    board = leaderboard(train_fingerprint("demo-tiny"), 0).set_index("candidate")
    assert board.loc["05_rerank.v2", "version"] == 2 and board.loc["05_rerank.v2", "usable"]
    # retrained, its scores moved: the parent's high-precision threshold is not carried over
    assert load_candidate(candidates_dir() / "05_rerank.v2").high_precision is None
    assert review["mlflow_runs"] == 2  # the parent and its new version
    oracle = pd.read_csv(artifacts_dir() / "labels" / "oracle.csv")
    assert oracle["label"].isin(["same", "different"]).sum() == 40
    shutil.rmtree(candidates_dir() / "05_rerank.v2")  # 05 runs again below
    path = artifacts_dir() / "gray_zone.csv"
    gray = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = load_dataset("demo-tiny")[0]  # as notebook 05 reads it: the splits are its own
    split = split_by_group(df["label_group"], (0.49, 0.21, 0.15, 0.15), seed=0,
                           names=("train", "stack", "val", "test"))
    train, test = df[split == "train"], df[split == "test"]

    def row(a, b, label):
        return {"posting_id_1": a["posting_id"], "posting_id_2": b["posting_id"],
                "title_1": a["title_raw"], "title_2": b["title_raw"], "image_1": a["image"],
                "image_2": b["image"], "score": "0.5", "label": label}

    mine = [row(train.iloc[0], train.iloc[1], "0"), row(train.iloc[2], train.iloc[3], "1"),
            row(train.iloc[4], train.iloc[5], "0"), row(test.iloc[0], train.iloc[6], "1")]
    pd.concat([gray, pd.DataFrame(mine)]).to_csv(path, index=False)
    people = LabelLog(labels_path())  # notebook 07's file: people's labels (not the oracle's)
    people.answer(train.iloc[6]["posting_id"], train.iloc[7]["posting_id"], "same",
                  title_1=train.iloc[6]["title_raw"], title_2=train.iloc[7]["title_raw"])
    people.answer(test.iloc[1]["posting_id"], train.iloc[8]["posting_id"], "different")
    [again] = run_ok(["05"])
    kept = pd.read_csv(path, dtype=str, keep_default_na=False)
    for r in mine:
        got = kept[(kept["posting_id_1"] == r["posting_id_1"]) &
                   (kept["posting_id_2"] == r["posting_id_2"])]
        assert got["label"].tolist() == [r["label"]]  # still there, still labelled
    labels = again.records["gray_zone_labels"]
    assert labels["training"] == 4 and labels["evaluation"] == 1  # 3 gray-zone + 1 of 07's
    assert again.records["training_pairs"]["labelled gray zone"] == 4
    assert "03_thresholds (saved)" in [row[0] for row in again.records["ablation"]]
    broken = path.read_text() + "p1,p2,a,b,,,0.5,1,one field too many\n"
    path.write_text(broken)
    runs = run_report("ci", only=["05"], notebooks_dir=ROOT / "notebooks",
                      out_dir=tmp_path / "reports", progress=False)
    assert runs[0].status == "failed"
    assert str(path) in runs[0].error and "has 9 fields" in runs[0].error, runs[0].error
    assert path.read_text() == broken
