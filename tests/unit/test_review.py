"""Reviewing pairs: the labels file, the queues, active learning and the labeller widget."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shopee_match.apply.review import best_boundary, review_queue, service_queue
from shopee_match.train.active import pick_uncertain, simulate_labelling
from shopee_match.train.labels import (
    LabelLog,
    current_labels,
    label_counts,
    label_pairs,
    labelled_training_pairs,
    labels_digest,
    read_label_lines,
    training_labels,
)


def test_answers_replay_with_undo_and_relabelling(tmp_path):
    log = LabelLog(tmp_path / "labels.csv")
    log.answer("p1", "p2", "same", queue="uncertain", candidate="05_rerank",
               scores={"score": 0.51234, "cross_encoder": None})
    log.answer("p3", "p4", "different")
    log.answer("p2", "p1", "different")  # the same pair the other way round: relabelled
    log.undo()  # withdraws the relabelling: "same" stands again
    log.answer("p5", "p6", "skip")
    log.undo()
    log.undo()  # withdraws p3/p4
    answers = current_labels(tmp_path / "labels.csv")
    assert answers["key"].tolist() == [("p1", "p2")]
    assert answers["label"].tolist() == ["same"]
    assert json.loads(answers["scores"].iloc[0]) == {"score": 0.5123}
    assert len(read_label_lines(tmp_path / "labels.csv")) == 7  # nothing is ever rewritten
    log.answer("p1", "p2", "different")  # a second answer keeps the last one
    assert log.current()["label"].tolist() == ["different"]
    log.undo()
    log.undo()
    log.undo()  # more undos than answers: nothing left, no error
    assert log.current().empty


def test_counts_and_training_labels_set_val_and_test_aside(tmp_path):
    log = LabelLog(tmp_path / "labels.csv")
    for a, b, label in [("t1", "t2", "same"), ("t3", "v1", "different"), ("t4", "t5", "skip"),
                        ("t6", "t7", "different")]:
        log.answer(a, b, label, title_1=f"title {a}", title_2=f"title {b}")
    answers = log.current()
    assert label_counts(answers, queue_size=10) == {"labelled": 3, "same": 1, "different": 2,
                                                    "skipped": 1, "remaining": 6}
    digest = labels_digest(answers)
    assert digest == labels_digest(answers.iloc[::-1]) and len(digest) == 16
    log.answer("t4", "t5", "same")
    assert labels_digest(log.current()) != digest
    log.undo()
    train, aside = training_labels(answers, held_out_ids=["v1"])
    assert list(zip(train["posting_id_1"], train["label"])) == [("t1", 1.0), ("t6", 0.0)]
    assert aside["posting_id_2"].tolist() == ["v1"]
    pairs, set_aside = labelled_training_pairs(tmp_path / "labels.csv", ["v1"])
    assert pairs.values.tolist() == [["title t1", "title t2", 1.0], ["title t6", "title t7", 0.0]]
    assert set_aside == 1
    assert labelled_training_pairs(tmp_path / "none.csv", [])[0].empty
    a, b, y = label_pairs(answers, ["t6", "t7", "t1", "t2", "x"])
    assert a.tolist() == [2, 0] and b.tolist() == [3, 1] and y.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("line, message", [
    ("2026-01-01,p1,p2,maybe,,,,,{}", "label 'maybe' is not one of"),
    ("2026-01-01,p1,,same,,,,,{}", "two different posting ids"),
    ("2026-01-01,p1,p1,same,,,,,{}", "two different posting ids"),
    ("2026-01-01,p1,p2,same,,,,,[1]", "is not a JSON object"),
    ("2026-01-01,p1,p2,same,,,", "has 7 fields"),
])
def test_a_bad_line_edited_by_hand_is_an_error_naming_it(tmp_path, line, message):
    path = tmp_path / "labels.csv"
    LabelLog(path).answer("a", "b", "same")
    with path.open("a") as f:
        f.write(line + "\n")
    with pytest.raises(ValueError, match=message) as err:
        LabelLog(path)
    assert "line 3" in str(err.value)


def test_a_file_without_the_columns_is_an_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks column"):
        current_labels(path)


def naive_boundary(scores, accepted):
    """Most verdicts any threshold agrees with, every midpoint tried in turn (the reference
    for best_boundary)."""
    cuts = sorted(set(scores))
    candidates = [cuts[0] - 1] + [(x + y) / 2 for x, y in zip(cuts, cuts[1:])] + [cuts[-1]]
    return max(np.sum((np.asarray(scores) >= c) == accepted) for c in candidates)


def test_best_boundary_agrees_with_the_most_verdicts():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.random(30)
        accepted = (scores + rng.normal(0, 0.2, 30)) > 0.5
        t = best_boundary(scores, accepted)
        best = naive_boundary(scores, accepted)
        assert np.sum((scores >= t) == accepted) == best
    assert best_boundary(np.array([0.9, 0.8, 0.2]), np.array([True, True, False])) == 0.5


def test_pick_uncertain_takes_the_closest_then_random_others():
    scores = np.array([0.1, 0.45, 0.9, 0.52, 0.3, 0.7, 0.49, 0.05, 0.6, 0.95])
    taken = np.zeros(10, bool)
    taken[6] = True  # 0.49 is labelled already
    picked = pick_uncertain(scores, 0.5, 5, exclude=taken, random_share=0.4, seed=1)
    assert picked[:3].tolist() == [3, 1, 8]  # |0.52-.5|, |0.45-.5|, |0.6-.5|
    assert len(set(picked)) == 5 and 6 not in picked
    assert pick_uncertain(scores, 0.5, 50, exclude=taken).size == 9  # all that is left


def test_simulated_labelling_feeds_each_round_the_last_model():
    truth = np.arange(40) % 2 == 0
    calls = []

    def fit_and_score(labelled):
        calls.append(labelled.copy())
        return np.linspace(0, 1, 40), 0.5, {"n": len(labelled), "share": truth[labelled].mean()
                                            if len(labelled) else 0.0}

    curve = simulate_labelling(40, fit_and_score, [0, 4, 10], "uncertainty", 0.0, seed=0)
    assert curve["labels"].tolist() == [0, 4, 10] and curve["n"].tolist() == [0, 4, 10]
    close = np.argsort(np.abs(np.linspace(0, 1, 40) - 0.5), kind="stable")
    assert calls[1].tolist() == close[:4].tolist()  # nearest 0.5 under the 0-label model
    assert calls[2][:4].tolist() == calls[1].tolist()  # labels only ever grow
    random = simulate_labelling(40, fit_and_score, [0, 4, 10], "random", seed=0)
    assert len(set(calls[-1])) == 10 and random["strategy"].eq("random").all()
    with pytest.raises(ValueError, match="ascending"):
        simulate_labelling(40, fit_and_score, [10, 4])


def queue_table():
    return pd.DataFrame({"a": [0, 0, 1, 2, 3], "b": [1, 2, 3, 4, 4],
                         "bi_encoder": [0.9, 0.8, 0.7, 0.4, 0.3],
                         "cross_encoder": [0.95, 0.55, 0.3, 0.45, 0.02],
                         "score": [0.97, 0.52, 0.2, 0.6, 0.01],
                         "accepted": [True, True, False, True, False],
                         "is_match": [True, False, False, True, False]})


def test_queues_leave_answered_pairs_out_and_order_by_doubt():
    table = queue_table()
    ids = ["p0", "p1", "p2", "p3", "p4"]
    uncertain = review_queue(table, "uncertain", 3, threshold=0.5, posting_ids=ids,
                             answered={("p0", "p2")}, random_share=0.0)
    assert list(zip(uncertain["a"], uncertain["b"])) == [(2, 4), (1, 3), (0, 1)]
    gray = review_queue(table, "gray_zone", 5, threshold=0.5, gray_band=(0.3, 0.6),
                        posting_ids=ids)
    assert list(zip(gray["a"], gray["b"])) == [(0, 2), (2, 4), (1, 3)]
    # the bi-encoder agrees best with the verdicts at 0.75 (4 of 5, first of a tie): it says
    # "different" to (2, 4) at 0.4, which the candidate accepted
    disagree = review_queue(table, "disagree", 5, threshold=0.5, posting_ids=ids)
    assert list(zip(disagree["a"], disagree["b"])) == [(2, 4)]
    random = review_queue(table, "random", 10, threshold=0.5, posting_ids=ids, seed=4)
    assert sorted(zip(random["a"], random["b"])) == sorted(zip(table["a"], table["b"]))
    assert (random["queue"] == "random").all()
    with pytest.raises(ValueError, match="no gray band"):
        review_queue(table, "gray_zone", 5, threshold=0.5, posting_ids=ids)


def test_service_queue_reads_the_gray_log(tmp_path):
    path = tmp_path / "gray_zone.jsonl"
    path.write_text(json.dumps({"endpoint": "/match", "title": "red kettle 1L", "neighbours": [
        {"posting_id": "p9", "title": "kettle red 1 litre", "score": 0.5,
         "cross_encoder": 0.47}]}) + "\n\n" + json.dumps(
        {"endpoint": "/pair", "title_a": "a", "title_b": "b", "score_a_b": 0.4}) + "\n")
    queue = service_queue(path)
    assert queue[["posting_id_1", "posting_id_2"]].values.tolist() == [
        ["request:1", "p9"], ["request:3a", "request:3b"]]
    assert queue["cross_encoder"].iloc[0] == 0.47 and queue["score"].iloc[1] == 0.4
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        service_queue(path)
    assert service_queue(tmp_path / "none.jsonl").empty


def widget_queue(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    return pd.DataFrame({"posting_id_1": ["a", "c", "e"], "posting_id_2": ["b", "d", "f"],
                         "title_1": ["red <kettle>", "blue mug", "green cup"],
                         "title_2": ["kettle red", "mug blue", "cup"],
                         "image_1": [str(tmp_path / "a.jpg"), str(tmp_path / "gone.jpg"), ""],
                         "image_2": [str(tmp_path / "broken.jpg"), None, None],
                         "score": [0.5, 0.4, 0.6], "accepted": [True, False, True],
                         "queue": "uncertain"})


def test_labeller_clicks_write_labels_undo_and_resume(tmp_path):
    from shopee_match.widgets import PairLabeller

    log = LabelLog(tmp_path / "labels.csv")
    labeller = PairLabeller(widget_queue(tmp_path), log, candidate="05_rerank")
    html = labeller.pair_view.value
    assert "data:image/jpeg;base64" in html and "photo cannot be read" in html
    assert "red &lt;kettle&gt;" in html and "candidate says <b>same</b>" in html
    labeller.buttons["same"].click()
    labeller.buttons["different"].click()
    assert labeller.current()["posting_id_1"] == "e"
    labeller.buttons["undo"].click()  # back to c/d
    assert labeller.current()["posting_id_1"] == "c"
    labeller.key_box.value = "s"  # the key box: s = same
    assert labeller.key_box.value == ""
    assert labeller.counts() == {"labelled": 2, "same": 2, "different": 0, "skipped": 0,
                                 "remaining": 1}
    assert "remaining <b>1</b>" in labeller.status.value and labeller.progress.value == 2
    answers = log.current()
    assert answers[["posting_id_1", "label", "queue", "candidate"]].values.tolist() == [
        ["a", "same", "uncertain", "05_rerank"], ["c", "same", "uncertain", "05_rerank"]]
    # a restart (a new labeller on the same file) resumes at the first open pair
    again = PairLabeller(widget_queue(tmp_path), LabelLog(tmp_path / "labels.csv"))
    assert again.current()["posting_id_1"] == "e"
    assert "no photo" in again.pair_view.value
    again.buttons["skip"].click()
    assert again.current() is None and "are answered" in again.pair_view.value
    again.buttons["undo"].click()
    again.buttons["undo"].click()  # walks back into answers of the earlier session
    assert again.current()["posting_id_1"] == "c"
    assert again.counts()["labelled"] == 1


def test_labeller_shows_attributions_per_title(tmp_path):
    from shopee_match.widgets import PairLabeller, split_at_separator

    tokens = [("[CLS]", 0.0), ("red", 0.5), ("kett", 0.2), ("##le", 0.4), ("[SEP]", 0.0),
              ("kettle", 0.9), ("[SEP]", 0.0)]
    assert split_at_separator(tokens) == [[("red", 0.5), ("kett", 0.2), ("##le", 0.4)],
                                          [("kettle", 0.9)]]
    labeller = PairLabeller(widget_queue(tmp_path), LabelLog(tmp_path / "l.csv"),
                            explain=lambda a, b: tokens)
    view = labeller.pair_view.value
    assert "kettle</span>" in view and "title='+0.90'" in view
    with pytest.raises(ValueError, match="lacks column"):
        PairLabeller(pd.DataFrame({"posting_id_1": []}), LabelLog(tmp_path / "l.csv"))


def test_label_studio_round_trip(tmp_path):
    from shopee_match.train.label_studio import LABEL_CONFIG, export_tasks, import_annotations

    photos = tmp_path / "images"
    photos.mkdir()
    queue = pd.DataFrame({"posting_id_1": ["a", "c", "e"], "posting_id_2": ["b", "d", "f"],
                          "title_1": ["red kettle", "blue mug", "cup"],
                          "title_2": ["kettle red", "mug", "cup green"],
                          "image_1": [str(photos / "a.jpg"), str(photos / "sub" / "c.jpg"), None],
                          "image_2": [str(photos / "b.jpg"), "", None],
                          "score": [0.5, 0.4, 0.6], "queue": "uncertain"})
    path, root = export_tasks(queue, tmp_path / "ls" / "tasks.json", document_root=tmp_path,
                              candidate="05_rerank")
    assert root == tmp_path
    assert export_tasks(queue, tmp_path / "ls2" / "tasks.json")[1] == photos  # all photos' folder
    tasks = json.loads(path.read_text())
    assert tasks[1]["data"]["image_1"] == "/data/local-files/?d=images/sub/c.jpg"
    assert tasks[1]["data"]["image_2"] == "" and tasks[0]["data"]["scores"] == {"score": 0.5}
    config = (tmp_path / "ls" / "label_config.xml").read_text()
    assert config == LABEL_CONFIG and all(f"${v}" in config for v in
                                          ("image_1", "image_2", "title_1", "title_2"))
    # what Label Studio's JSON export gives back: an answer, a relabelling, a cancelled one
    def result(choice):
        return [{"from_name": "match", "to_name": "title_1", "type": "choices",
                 "value": {"choices": [choice]}}]

    tasks[0]["annotations"] = [{"result": result("Different")}, {"result": result("Same product")}]
    tasks[1]["annotations"] = [{"result": result("Different"), "was_cancelled": True}]
    tasks[2]["annotations"] = [{"result": result("Skip")}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    log = LabelLog(tmp_path / "labels.csv")
    assert import_annotations(export, log) == {"imported": 2, "unanswered": 1}
    answers = log.current()
    assert answers[["posting_id_1", "label", "queue", "candidate"]].values.tolist() == [
        ["a", "same", "label-studio:uncertain", "05_rerank"],
        ["e", "skip", "label-studio:uncertain", "05_rerank"]]
    from shopee_match.cli import main

    assert main(["labels", "--file", str(tmp_path / "cli.csv"), "--import-label-studio",
                 str(export)]) == 0
    assert current_labels(tmp_path / "cli.csv")["label"].tolist() == ["same", "skip"]
    tasks[2]["annotations"] = [{"result": result("Maybe")}]
    export.write_text(json.dumps(tasks))
    with pytest.raises(ValueError, match="task 3 .*'Maybe'"):
        import_annotations(export, log)
    assert main(["labels", "--file", str(tmp_path / "cli.csv"), "--import-label-studio",
                 str(export)]) == 2  # one line naming the task, nothing imported
    assert len(log.current()) == 2  # nothing of a bad export is imported
    with pytest.raises(ValueError, match="not under the document root"):
        export_tasks(queue, tmp_path / "x.json", document_root=tmp_path / "elsewhere")


def test_labels_are_routed_by_the_split_of_both_postings():
    from shopee_match.apply.retrain import route_labels

    ids = [f"p{i}" for i in range(8)]
    splits = {"train": np.array([0, 1, 2]), "stack": np.array([3, 4]), "val": np.array([5]),
              "test": np.array([6, 7])}
    answers = pd.DataFrame({
        "posting_id_1": ["p0", "p3", "p1", "p0", "p2", "x9", "p4"],
        "posting_id_2": ["p1", "p4", "p5", "p3", "p0", "p1", "p3"],
        "label": ["same", "different", "same", "same", "skip", "same", "same"],
        "title_1": ["t0", "t3", "t1", "t0", "t2", "t9", "t4"],
        "title_2": ["t1", "t4", "t5", "t3", "t0", "t1", "t3"]})
    answers["key"] = [tuple(sorted(k)) for k in zip(answers["posting_id_1"],
                                                    answers["posting_id_2"])]
    answers = answers.drop_duplicates("key", keep="last")  # as current_labels gives them
    routed = route_labels(answers, ids, splits)
    assert routed.cross_encoder.values.tolist() == [["t0", "t1", 1.0]]
    assert routed.classifier == {("p3", "p4"): 1.0}  # the relabelling p4/p3 = same stands
    assert routed.summary() == {"cross_encoder": 1, "classifier": 1, "set_aside": 1,
                                "unusable": 2}  # p0/p3 across splits, x9 unknown


def clustered(n_groups=40, per_group=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_groups), per_group)
    v = rng.normal(size=(n_groups, 8))[labels] + 0.7 * rng.normal(size=(len(labels), 8))
    return {"text": (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)}, labels


def test_scored_pair_table_lists_each_pair_once_with_the_verdict():
    from shopee_match.apply.review import scored_pair_table
    from shopee_match.match.config import MatchConfig
    from shopee_match.match.decision import predict_matches
    from shopee_match.match.selection import Galleries

    vectors, labels = clustered()
    galleries = Galleries(vectors, labels, fractions=(0.49, 0.21, 0.15, 0.15),
                          names=("train", "stack", "val", "test"))
    config = MatchConfig(encoders={"text": "sbert:x"}, fusion_weights={"text": 1.0}, k=5,
                         value=0.6)
    table = scored_pair_table(galleries, "stack", config)
    rows = galleries.rows["stack"]
    assert (table["a"] < table["b"]).all() and not table.duplicated(["a", "b"]).any()
    assert set(table["a"]) | set(table["b"]) <= set(rows)
    v = vectors["text"]
    np.testing.assert_allclose(table["bi_encoder"], (v[table["a"]] * v[table["b"]]).sum(1),
                               atol=1e-5)
    np.testing.assert_allclose(table["score"], table["bi_encoder"], atol=1e-5)
    assert (table["is_match"] == (labels[table["a"]] == labels[table["b"]])).all()
    matches = predict_matches(galleries.splits["stack"], config)
    local = {r: i for i, r in enumerate(rows)}
    said = [bool(matches[local[a], local[b]] or matches[local[b], local[a]])
            for a, b in zip(table["a"], table["b"])]
    assert table["accepted"].tolist() == said
    assert table["cross_encoder"].isna().all()  # a threshold candidate has no cross-encoder


def test_labelling_curve_fits_a_classifier_on_the_labels_alone():
    from shopee_match.apply.retrain import labelling_curve
    from shopee_match.match.config import MatchConfig
    from shopee_match.match.selection import Galleries

    vectors, labels = clustered(n_groups=60, seed=1)
    galleries = Galleries(vectors, labels, fractions=(0.49, 0.21, 0.15, 0.15),
                          names=("train", "stack", "val", "test"))
    config = MatchConfig(encoders={"text": "sbert:x"}, fusion_weights={"text": 1.0}, k=5,
                         value=0.6)
    curve = labelling_curve(galleries, config, None, [0, 20, 60], "uncertainty", grid=[0.3, 0.5])
    assert curve["labels"].tolist() == [0, 20, 60]
    base = galleries.scores(config, "test")
    assert curve["test row F1"].iloc[0] == pytest.approx(base["row_f1"])  # its own rule
    again = labelling_curve(galleries, config, None, [0, 20, 60], "uncertainty",
                            grid=[0.3, 0.5])
    pd.testing.assert_frame_equal(curve, again)  # the same picks and fits every time
    random = labelling_curve(galleries, config, None, [0, 20, 60], "random", grid=[0.3, 0.5])
    assert random["test row F1"].iloc[0] == curve["test row F1"].iloc[0]


def test_a_batch_of_answers_from_code_is_drawn_once(tmp_path):
    from shopee_match.widgets import PairLabeller

    labeller = PairLabeller(widget_queue(tmp_path), LabelLog(tmp_path / "labels.csv"))
    first = labeller.pair_view.value
    with labeller.batch():
        labeller.buttons["same"].click()
        assert labeller.pair_view.value == first and labeller.status.value.count("<b>0</b>")
    assert "pair 2 of 3" in labeller.pair_view.value
    assert "labelled <b>1</b>" in labeller.status.value


def test_same_answers_join_label_groups_of_training_postings():
    from shopee_match.apply.retrain import corrected_groups

    labels = np.array([7, 7, 8, 9, 9, 5])
    ids = [f"p{i}" for i in range(6)]
    answers = pd.DataFrame({"posting_id_1": ["p0", "p3", "p0", "p5", "p2"],
                            "posting_id_2": ["p2", "p4", "p1", "p2", "p3"],
                            "label": ["same", "different", "skip", "same", "different"]})
    groups, notes = corrected_groups(labels, answers, ids, rows=np.arange(5))
    assert groups[0] == groups[1] == groups[2]  # p0 (group 7) same as p2 (group 8)
    assert groups[3] == groups[4] != groups[0]  # "different" inside group 9: left, counted
    assert groups[5] not in groups[:5]  # p5 is outside the rows: its answer is not used
    assert notes == {"joined": 1, "conflicts": 1}


def test_a_projection_head_is_trained_again_on_corrected_groups(tiny_env):
    from shopee_match.apply.candidates import save_candidate
    from shopee_match.apply.retrain import retrain_head
    from shopee_match.apply.tuning import prepare_tuning
    from shopee_match.data.splits import split_by_group
    from shopee_match.match.config import MatchConfig
    from shopee_match.train.finetune import TrainConfig, train_head

    data = prepare_tuning("demo-tiny", "offline", 96, progress=False)
    dense = {m: data.vectors[m] for m in data.dense}
    split = split_by_group(data.labels, (0.7, 0.15, 0.15), seed=0)
    head = train_head(dense, data.labels, split, TrainConfig(epochs=2, p=8, k=2), data.encoders,
                      96, data.fingerprint, 0, k=10, progress=False, int8=data.int8)
    config = MatchConfig(encoders={**data.encoders, "joint": head.spec},
                         fusion_weights={"joint": 1.0}, k=10, value=0.6, int8=data.int8)
    candidate = save_candidate("04_finetuned", config, 0.5, 0.5, dataset="demo-tiny",
                               fingerprint=data.fingerprint, split_seed=0, notebook="test")
    ids = data.postings["posting_id"].to_numpy()
    train = np.flatnonzero(split == "train")
    a, b = train[0], next(r for r in train if data.labels[r] != data.labels[train[0]])
    answers = pd.DataFrame({"posting_id_1": [ids[a]], "posting_id_2": [ids[b]],
                            "label": ["same"], "key": [tuple(sorted((ids[a], ids[b])))]})
    tuned, notes = retrain_head(candidate, data, answers, thresholds=[0.4, 0.6, 0.8])
    assert notes["joined"] == 1 and notes["conflicts"] == 0
    new_spec = tuned.config.encoders["joint"]
    assert new_spec != candidate.config.encoders["joint"] and new_spec.startswith("finetuned:")
    assert tuned.config.value in (0.4, 0.6, 0.8) and 0.0 <= tuned.val_f1 <= 1.0
    assert tuned.config.models["joint"] == data.models["joint"]  # embedded by the new head
    # a candidate deciding without its head has nothing of it to retrain
    unused = save_candidate("04_other", config.replace(fusion_weights={"text": 1.0}), 0.5, 0.5,
                            dataset="demo-tiny", fingerprint=data.fingerprint, split_seed=0,
                            notebook="test")
    assert retrain_head(unused, data, answers) is None
