"""Group-aware splits and ground-truth match sets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shopee_match.data.schema import LABEL_GROUP, POSTING_ID

SPLIT_NAMES = ("train", "val", "test")


def split_by_group(
    labels: Sequence[int] | pd.Series,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> np.ndarray:
    """Assign every row to a split so that no label group crosses splits.

    Groups are shuffled with ``seed`` and taken in turn until each split holds
    about its fraction of the *rows*. Returns an array of split names aligned
    with ``labels``.
    """
    fractions = np.asarray(fractions, dtype=float)
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions given for {len(names)} split names")
    if (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions.tolist()}")
    labels = np.asarray(labels)
    groups, sizes = np.unique(labels, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(groups))
    # the row share reached by the *middle* of each group decides its split
    middle = (np.cumsum(sizes[order]) - sizes[order] / 2) / len(labels)
    split_of_group = np.empty(len(groups), dtype=object)
    split_of_group[order] = np.asarray(names, dtype=object)[
        np.searchsorted(np.cumsum(fractions)[:-1], middle, side="right")
    ]
    return split_of_group[np.searchsorted(groups, labels)].astype(str)


def ground_truth(postings: pd.DataFrame) -> pd.Series:
    """``posting_id -> frozenset`` of the posting_ids in its label group, itself included."""
    if LABEL_GROUP not in postings.columns:
        raise ValueError(
            "Ground truth needs a label_group column; this looks like unlabelled test data."
        )
    members = postings.groupby(LABEL_GROUP)[POSTING_ID].agg(frozenset)
    return pd.Series(
        members.loc[postings[LABEL_GROUP]].to_numpy(), index=postings[POSTING_ID].to_numpy(),
        name="truth",
    )
