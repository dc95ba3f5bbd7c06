"""The selection protocol: chooses on val only, reports test, keeps only steps that help."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopee_match.data.splits import ground_truth
from shopee_match.match.config import MatchConfig
from shopee_match.match.metrics import row_f1
from shopee_match.match.selection import (
    Ablation,
    Galleries,
    Tuned,
    best_of,
    choose,
    choose_config,
    tune,
)

BASE = MatchConfig(encoders={"image": "timm:x:none", "text": "sbert:y"},
                   fusion_weights={"image": 1.0, "text": 1.0}, k=10, value=0.5)


def fake_evaluator(val_curve, test_curve):
    """F1 as a function of ``value``: val peaks at 0.5, test at 0.7 (they disagree)."""
    def evaluate(config, split):
        return (val_curve if split == "val" else test_curve)(config.value)
    return evaluate


DISAGREE = fake_evaluator(lambda v: 1 - abs(v - 0.5), lambda v: 1 - abs(v - 0.7))


def test_choose_reads_test_at_the_val_choice():
    pick = choose([0.2, 0.9, 0.4], [0.8, 0.5, 0.95])
    assert (pick.index, pick.val_f1, pick.test_f1, pick.test_f1_upper) == (1, 0.9, 0.5, 0.95)


def test_choose_breaks_ties_by_the_first_option():
    assert choose([0.7, 0.9, 0.9, 0.1]).index == 1
    with pytest.raises(ValueError, match="nothing to choose"):
        choose([])
    with pytest.raises(ValueError, match="3 val scores but 2 test"):
        choose([1, 2, 3], [1, 2])


def test_tune_never_picks_by_test_f1():
    tuned = tune(DISAGREE, BASE, "value", [0.3, 0.5, 0.7, 0.9])
    assert tuned.config.value == 0.5  # best on val
    assert tuned.val_f1 == pytest.approx(1.0)
    assert tuned.test_f1 == pytest.approx(0.8)  # fair: test F1 at the val choice
    assert tuned.test_f1_upper == pytest.approx(1.0)  # test's own best (0.7): a bound only
    assert tuned.test_f1 < tuned.test_f1_upper


def test_best_of_and_choose_config_go_by_val():
    a = Tuned(BASE.replace(value=0.1), 0.6, 0.9, 0.9)
    b = Tuned(BASE.replace(value=0.2), 0.7, 0.1, 0.1)
    c = Tuned(BASE.replace(value=0.3), 0.7, 0.2, 0.2)
    assert best_of([a, b, c]) is b  # higher val beats higher test; the first of equal vals
    picked = choose_config(DISAGREE, [BASE.replace(value=v) for v in (0.7, 0.5)])
    assert picked.config.value == 0.5


def test_ablation_keeps_only_steps_that_raise_val():
    ablation = Ablation()
    assert ablation.try_step("first", Tuned(BASE, 0.5, 0.50, 0.55))  # nothing kept yet
    assert not ablation.try_step("worse on val", Tuned(BASE.replace(value=0.9), 0.4, 0.70, 0.7))
    assert not ablation.try_step("equal on val", Tuned(BASE.replace(value=0.8), 0.5, 0.60, 0.6))
    assert ablation.config.value == 0.5  # the base for the next step is still the kept row
    assert ablation.try_step("better", Tuned(BASE.replace(value=0.6), 0.6, 0.45, 0.6))
    ablation.add("tfidf alone", Tuned(None, 0.99, 0.99, 0.99), kept=False)
    table = ablation.table()
    assert table["kept"].tolist() == [True, False, False, True, False]
    gains = table["gain vs last kept (test, fair)"].tolist()
    assert np.isnan(gains[0])
    assert gains[1:] == pytest.approx([0.20, 0.10, -0.05, 0.54])  # vs the last *kept* row
    step, best = ablation.best()  # best val among rows with a configuration
    assert step == "better" and best.config.value == 0.6


def clustered(n_groups=60, per_group=3, noise=0.35, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_groups) * 7 + 3, per_group)
    centres = rng.normal(size=(n_groups, 16))
    vectors = {}
    for name in ("image", "text"):
        v = centres[np.repeat(np.arange(n_groups), per_group)] + noise * rng.normal(
            size=(len(labels), 16))
        vectors[name] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return vectors, labels


def test_galleries_split_by_group_and_match_within_each_split():
    vectors, labels = clustered()
    galleries = Galleries(vectors, labels, split_seed=3)
    seen = [set(galleries.labels[s]) for s in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(r) for r in galleries.rows.values()) == len(labels)
    matches = galleries.predict(BASE, "val")
    assert matches.shape == (len(galleries.rows["val"]),) * 2
    sizes = galleries.sizes()
    assert sizes.loc["listings"].sum() == len(labels)


def test_evaluate_equals_the_naive_set_based_row_f1():
    from shopee_match.match.matrices import matrix_to_sets

    vectors, labels = clustered(noise=0.6, seed=1)
    galleries = Galleries(vectors, labels)
    for value in (0.3, 0.6, 0.9):
        config = BASE.replace(value=value)
        matches = galleries.predict(config, "test")
        ids = [f"p{i}" for i in galleries.rows["test"]]
        truth = ground_truth(pd.DataFrame({"posting_id": ids,
                                           "label_group": galleries.labels["test"]}))
        naive = row_f1(matrix_to_sets(matches, ids), truth)
        assert galleries.evaluate(config, "test") == pytest.approx(naive, rel=1e-12)


def test_sweep_agrees_with_evaluate_for_every_value():
    vectors, labels = clustered(noise=0.6, seed=2)
    galleries = Galleries(vectors, labels)
    values = [0.2, 0.5, 0.8]
    table = galleries.sweep("val", BASE.fusion_weights, BASE.k, values)
    direct = [galleries.evaluate(BASE.replace(value=v), "val") for v in values]
    assert table["f1"].tolist() == pytest.approx(direct, rel=1e-12)


def test_tuning_on_real_galleries_reports_test_at_the_val_choice():
    vectors, labels = clustered(noise=0.7, seed=4)
    galleries = Galleries(vectors, labels)
    values = list(np.linspace(0.1, 0.95, 18))
    tuned = tune(galleries.evaluator(), BASE, "value", values)
    val = [galleries.evaluate(BASE.replace(value=v), "val") for v in values]
    test = [galleries.evaluate(BASE.replace(value=v), "test") for v in values]
    assert tuned.config.value == values[int(np.argmax(val))]
    assert tuned.test_f1 == test[int(np.argmax(val))] and tuned.test_f1_upper == max(test)


def test_carving_train_into_two_keeps_val_and_test():
    vectors, labels = clustered(n_groups=80, seed=5)
    three = Galleries(vectors, labels, split_seed=2)
    four = Galleries(vectors, labels, split_seed=2, fractions=(0.49, 0.21, 0.15, 0.15),
                     names=("train", "stack", "val", "test"))
    assert np.array_equal(three.rows["val"], four.rows["val"])
    assert np.array_equal(three.rows["test"], four.rows["test"])
    assert np.array_equal(np.sort(np.concatenate([four.rows["train"], four.rows["stack"]])),
                          three.rows["train"])


def test_one_to_one_pairs_are_the_mutual_best_accepted_pairs_of_a_naive_loop():
    from shopee_match.match.decision import candidate_pair_features

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(40), 3)
    v = rng.normal(size=(40, 8))[labels] + 0.7 * rng.normal(size=(len(labels), 8))
    vectors = {"text": (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)}
    galleries = Galleries(vectors, labels, fractions=(0.5, 0.5), names=("val", "test"))
    config = MatchConfig(encoders={"text": "sbert:x"}, fusion_weights={"text": 1.0}, k=5,
                         value=0.8)  # strict: some listings have no accepted pair at all
    scores, is_match = galleries.one_to_one_pairs(config, "val")

    pairs = candidate_pair_features(galleries.splits["val"], config)
    directed, _ = galleries.pair_scores(config, "val")
    matches = galleries.predict(config, "val").toarray()
    best_score = {}  # each unordered pair once, its higher score
    for i, j, s in zip(pairs.i, pairs.j, directed):
        key = (min(i, j), max(i, j))
        best_score[key] = max(best_score.get(key, -np.inf), s)
    accepted = {k: s for k, s in best_score.items() if matches[k] or matches[k[::-1]]}
    best_of = {}  # each listing's best accepted partner: highest score, then smaller row
    for (a, b), s in sorted(accepted.items(), key=lambda kv: (-kv[1], kv[0])):
        for row, other in ((a, b), (b, a)):
            if row not in best_of or (s, -other) > (accepted[tuple(sorted((row, best_of[row])))],
                                                    -best_of[row]):
                best_of[row] = other
    mutual = [(s, galleries.labels["val"][a] == galleries.labels["val"][b])
              for (a, b), s in accepted.items() if best_of[a] == b and best_of[b] == a]
    assert 0 < len(mutual) < len(accepted)  # the rule cuts something, and keeps something
    assert sorted(zip(scores, is_match)) == sorted(mutual)
    rows = [r for r in best_of if best_of[best_of[r]] == r]
    assert len(rows) == 2 * len(mutual)  # one-to-one: no listing in two kept pairs
