"""Group-aware splits and ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopee_match.data.splits import ground_truth, split_by_group


def labels_of(seed=0, n_groups=400):
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(n_groups) * 7, rng.integers(2, 8, size=n_groups))


def test_no_group_crosses_splits_and_row_shares_are_close():
    labels = labels_of()
    split = split_by_group(labels, (0.7, 0.15, 0.15), seed=3)
    per_group = pd.Series(split).groupby(labels).nunique()
    assert (per_group == 1).all()
    shares = pd.Series(split).value_counts(normalize=True)
    np.testing.assert_allclose(shares[["train", "val", "test"]], [0.7, 0.15, 0.15], atol=0.02)


def test_split_is_seeded():
    labels = labels_of()
    assert (split_by_group(labels, seed=1) == split_by_group(labels, seed=1)).all()
    assert (split_by_group(labels, seed=1) != split_by_group(labels, seed=2)).any()


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_group([1, 1, 2, 2], (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="fractions given"):
        split_by_group([1, 1], (0.5, 0.5))


def test_ground_truth_holds_the_group_including_self():
    df = pd.DataFrame({"posting_id": ["a", "b", "c", "d"], "label_group": [5, 9, 5, 5]})
    truth = ground_truth(df)
    assert truth["a"] == {"a", "c", "d"}
    assert truth["b"] == {"b"}
    assert list(truth.index) == ["a", "b", "c", "d"]


def test_ground_truth_needs_labels():
    with pytest.raises(ValueError, match="label_group"):
        ground_truth(pd.DataFrame({"posting_id": ["a"]}))
