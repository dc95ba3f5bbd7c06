"""Metrics: perfect / nothing right / hand-computed values / agreement with plain Python."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopee_match.match.metrics import (
    labelled_pairs,
    neighbor_row_f1,
    pair_auc,
    pairwise_scores,
    retrieval_at_k,
    row_f1,
    row_f1_scores,
)

TRUTH = {"a": {"a", "b"}, "b": {"a", "b"}, "c": {"c"}}


def reference_row_f1(predicted, truth):
    """The seed notebook's per-row loop."""
    scores = []
    for pid, true in truth.items():
        pred = set(predicted[pid])
        inter = len(pred & set(true))
        scores.append(2 * inter / (len(pred) + len(true)))
    return sum(scores) / len(scores)


def reference_pairwise(predicted, truth):
    pred = {(p, q) for p, qs in predicted.items() for q in qs if q != p}
    true = {(p, q) for p, qs in truth.items() for q in qs if q != p}
    tp = len(pred & true)
    return (tp / len(pred) if pred else 0.0, tp / len(true) if true else 0.0)


def random_case(rng, n=300):
    labels = rng.integers(0, n // 3, size=n)
    ids = [f"id{i}" for i in range(n)]
    truth = {ids[i]: {ids[j] for j in np.flatnonzero(labels == labels[i])} for i in range(n)}
    predicted = {}
    for i in range(n):
        k = int(rng.integers(0, 6))
        picks = rng.choice(n, size=k, replace=True)  # repeats allowed: must count once
        predicted[ids[i]] = [ids[j] for j in picks] + ([ids[i]] if rng.random() < 0.8 else [])
    return predicted, truth


def test_perfect_prediction_scores_one():
    assert row_f1(TRUTH, TRUTH) == 1.0
    assert pairwise_scores(TRUTH, TRUTH)["f1"] == 1.0


def test_nothing_right_scores_zero():
    wrong = {"a": {"c"}, "b": {"c"}, "c": {"a"}}
    assert row_f1(wrong, TRUTH) == 0.0
    assert pairwise_scores(wrong, TRUTH)["precision"] == 0.0
    assert pairwise_scores(wrong, TRUTH)["recall"] == 0.0


def test_hand_computed_row_f1():
    pred = {"a": {"a"}, "b": {"a", "b", "c"}, "c": {"c", "b"}}
    # a: 2*1/(1+2); b: 2*2/(3+2); c: 2*1/(2+1)
    expected = [2 / 3, 4 / 5, 2 / 3]
    np.testing.assert_allclose(row_f1_scores(pred, TRUTH).to_numpy(), expected, rtol=1e-12)
    assert row_f1(pred, TRUTH) == pytest.approx(np.mean(expected), rel=1e-12)


def test_hand_computed_pairwise():
    pred = {"a": {"a"}, "b": {"a", "b", "c"}, "c": {"c", "b"}}
    # predicted pairs b-a, b-c, c-b; true pairs a-b, b-a; one hit
    scores = pairwise_scores(pred, TRUTH)
    assert scores["true_positives"] == 1
    assert scores["precision"] == pytest.approx(1 / 3, rel=1e-12)
    assert scores["recall"] == pytest.approx(1 / 2, rel=1e-12)
    assert scores["f1"] == pytest.approx(2 / 5, rel=1e-12)


def test_space_separated_strings_and_series_are_accepted():
    pred = pd.Series(["a b", "b", "c"], index=["a", "b", "c"])
    assert row_f1(pred, TRUTH) == pytest.approx((1 + 2 / 3 + 1) / 3, rel=1e-12)


def test_predictions_are_aligned_by_id_not_position():
    pred = {"c": {"c"}, "b": {"a", "b"}, "a": {"a", "b"}}
    assert row_f1(pred, TRUTH) == 1.0


def test_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="no prediction"):
        row_f1({"a": {"a"}}, TRUTH)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_plain_python_on_random_cases(seed):
    predicted, truth = random_case(np.random.default_rng(seed))
    assert row_f1(predicted, truth) == pytest.approx(reference_row_f1(predicted, truth), rel=1e-12)
    precision, recall = reference_pairwise(predicted, truth)
    scores = pairwise_scores(predicted, truth)
    assert scores["precision"] == pytest.approx(precision, rel=1e-12)
    assert scores["recall"] == pytest.approx(recall, rel=1e-12)


def test_pair_auc_hand_computed():
    scores = [0.9, 0.8, 0.3, 0.1]
    match = [True, False, True, False]
    out = pair_auc(scores, match)
    assert out["roc_auc"] == pytest.approx(3 / 4, rel=1e-12)
    assert out["average_precision"] == pytest.approx((1 + 2 / 3) / 2, rel=1e-12)


def test_pair_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both matching and non-matching"):
        pair_auc([0.1, 0.2], [True, True])


def reference_retrieval(neighbors, labels, k, rows=None):
    recalls, hits = [], []
    for i, row in zip(range(len(labels)) if rows is None else rows, neighbors):
        others = [j for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        if not others:
            continue
        top = [j for j in row if j >= 0 and j != i][:k]
        found = sum(labels[j] == labels[i] for j in top)
        recalls.append(found / len(others))
        hits.append(found > 0)
    return np.mean(recalls), np.mean(hits)


def test_retrieval_hand_computed():
    labels = np.array([0, 0, 0, 1, 1, 2])
    neighbors = np.array([
        [0, 3, 1, 2],   # self skipped; top1 = 3 (miss), top2 adds 1 (hit)
        [2, 1, 0, 4],   # top1 = 2 (hit), top2 = 0 (hit)
        [5, 4, 2, 3],   # no hit in top 3
        [3, 4, -1, -1],  # top1 = 4 (hit); padding ignored
        [0, 1, 2, 3],   # 3 is fourth: miss for k <= 3
        [5, 0, 1, 2],   # lone: left out
    ])
    out = retrieval_at_k(neighbors, labels, ks=[1, 2, 3]).set_index("k")
    # recall@1: (0 + 1/2 + 0 + 1 + 0) / 5 ; hit@1: 2/5
    assert out.loc[1, "recall"] == pytest.approx(1.5 / 5, rel=1e-12)
    assert out.loc[1, "hit"] == pytest.approx(2 / 5, rel=1e-12)
    # recall@2: (1/2 + 1 + 0 + 1 + 0) / 5
    assert out.loc[2, "recall"] == pytest.approx(2.5 / 5, rel=1e-12)
    assert out.loc[3, "n_lone"] == 1 and out.loc[3, "n_queries"] == 5


def test_retrieval_agrees_with_plain_python():
    rng = np.random.default_rng(5)
    n = 200
    labels = rng.integers(0, 60, size=n)
    neighbors = np.stack([rng.permutation(n)[:21] for _ in range(n)])
    out = retrieval_at_k(neighbors, labels, ks=[1, 5, 20]).set_index("k")
    for k in (1, 5, 20):
        recall, hit = reference_retrieval(neighbors, labels, k)
        assert out.loc[k, "recall"] == pytest.approx(recall, rel=1e-12)
        assert out.loc[k, "hit"] == pytest.approx(hit, rel=1e-12)


def test_retrieval_on_sampled_queries_equals_the_same_rows_of_all_queries():
    rng = np.random.default_rng(6)
    n = 200
    labels = rng.integers(0, 60, size=n)
    neighbors = np.stack([np.concatenate([[r], rng.permutation(np.delete(np.arange(n), r))[:20]])
                          for r in range(n)])
    sample = np.sort(rng.choice(n, 50, replace=False))
    out = retrieval_at_k(neighbors[sample], labels, ks=[1, 5, 20], query_rows=sample)
    for k in (1, 5, 20):
        recall, hit = reference_retrieval(neighbors[sample], labels, k, rows=sample)
        assert out.set_index("k").loc[k, "recall"] == pytest.approx(recall, rel=1e-12)
        assert out.set_index("k").loc[k, "hit"] == pytest.approx(hit, rel=1e-12)
    assert out["n_queries"].iloc[0] + out["n_lone"].iloc[0] == 50
    with pytest.raises(ValueError, match="50 query rows"):
        retrieval_at_k(neighbors, labels, ks=[1], query_rows=sample)


def test_retrieval_rejects_k_beyond_list():
    with pytest.raises(ValueError, match="each k"):
        retrieval_at_k(np.zeros((3, 2), dtype=int), [0, 0, 1], ks=[5])


def test_neighbor_row_f1_hand_computed():
    labels = np.array([0, 0, 1, 1, 1])
    neighbors = np.array([[1, 2], [0, 3], [3, 4], [1, -1], [2, 3]])
    accepted = np.array([[True, True], [False, True], [True, False], [True, True],
                         [True, True]])
    # row 0: pred {0,1,2}, true {0,1} -> 2*2/5; row 1: pred {1,3}, true {0,1} -> 2*1/4
    # row 2: pred {2,3}, true {2,3,4} -> 2*2/5; row 3: pred {3,1} -> 2*1/5; row 4: {4,2,3} -> 1
    expected = [4 / 5, 2 / 4, 4 / 5, 2 / 5, 1.0]
    np.testing.assert_allclose(neighbor_row_f1(neighbors, accepted, labels), expected, rtol=1e-12)


def test_neighbor_row_f1_agrees_with_set_based_f1():
    rng = np.random.default_rng(7)
    n = 300
    labels = rng.integers(0, 90, size=n)
    neighbors = np.stack([rng.permutation(n)[:12] for _ in range(n)])
    accepted = rng.random(neighbors.shape) < 0.3
    ids = [f"p{i}" for i in range(n)]
    predicted = {ids[i]: {ids[i]} | {ids[j] for j, a in zip(neighbors[i], accepted[i]) if a}
                 for i in range(n)}
    truth = {ids[i]: {ids[j] for j in np.flatnonzero(labels == labels[i])} for i in range(n)}
    assert neighbor_row_f1(neighbors, accepted, labels).mean() == pytest.approx(
        reference_row_f1(predicted, truth), rel=1e-12)


def test_labelled_pairs_has_every_positive_and_only_true_negatives():
    labels = np.array([3, 1, 3, 3, 2, 1])
    i, j, match = labelled_pairs(labels, n_negative=500, seed=0)
    positives = {(a, b) for a, b, m in zip(i, j, match) if m}
    assert positives == {(0, 2), (0, 3), (2, 3), (1, 5)}
    assert (labels[i[match]] == labels[j[match]]).all()
    assert (labels[i[~match]] != labels[j[~match]]).all() and (~match).sum() > 100


def test_labelled_pairs_take_text_labels_and_give_the_same_pairs():
    ints = np.array([3, 1, 3, 3, 2, 1])
    text = np.array(["f3", "f1", "f3", "f3", "f2", "f1"], dtype=object)
    for a, b in zip(labelled_pairs(ints, 300, seed=1), labelled_pairs(text, 300, seed=1)):
        np.testing.assert_array_equal(a, b)


def test_pairs_of_one_kind_stop_with_a_message_saying_why():
    from shopee_match.match.metrics import require_both_classes

    with pytest.raises(ValueError, match="needs both matching and non-matching pairs; got 3 "
                                         "matching of 3.*too few label groups"):
        require_both_classes([True, True, True], "Evaluating the reranker")
    require_both_classes([True, False], "fine")
