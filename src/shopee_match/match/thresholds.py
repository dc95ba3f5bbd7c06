"""Threshold strategies: which of a query's neighbours to accept, and their F1 over a grid.

Neighbour lists are ``(sims, idx)`` arrays as :mod:`shopee_match.match.neighbors` returns them
(row ``r`` lists query ``r``'s neighbours, nearest first, ``-1`` padding, the query itself
usually in column 0). A strategy turns them into an ``accepted`` mask of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shopee_match.match.neighbors import real_neighbors
from shopee_match.match.sources import scope_sizes

#: rows per chunk in :func:`sweep` (its working arrays then fit in the CPU cache)
SWEEP_CHUNK_ROWS = 4096


def static_accept(sims: np.ndarray, idx: np.ndarray, threshold: float) -> np.ndarray:
    """Accept neighbours whose similarity is at least ``threshold`` (compared in float64, as
    :func:`sweep` compares, whatever the type of ``threshold``)."""
    return real_neighbors(idx) & (sims >= np.float64(threshold))


def neighbor_sim_stats(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each query's neighbour similarities (self, padding out)."""
    return _masked_mean_std(sims, real_neighbors(idx))


def _masked_mean_std(sims: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = np.maximum(mask.sum(axis=1), 1)
    mean = np.where(mask, sims, 0).sum(axis=1) / count
    var = np.where(mask, (sims - mean[:, None]) ** 2, 0).sum(axis=1) / count
    return mean, np.sqrt(var)


def dynamic_thresholds(sims: np.ndarray, idx: np.ndarray, multiplier: float) -> np.ndarray:
    """Per-query threshold ``mean + multiplier * std`` of its neighbours' similarities.

    A query in a dense region (many similar listings: variants of one family)
    gets a higher bar than an isolated one.
    """
    mean, std = neighbor_sim_stats(sims, idx)
    return mean + multiplier * std


def dynamic_accept(sims: np.ndarray, idx: np.ndarray, multiplier: float) -> np.ndarray:
    """Accept neighbours above the query's :func:`dynamic_thresholds`."""
    return real_neighbors(idx) & (sims >= dynamic_thresholds(sims, idx, multiplier)[:, None])


def quantile_accept(sims: np.ndarray, idx: np.ndarray, quantile: float) -> np.ndarray:
    """Accept neighbours above the ``quantile`` of the query's neighbour similarities."""
    mask = real_neighbors(idx)
    thresholds = np.full(len(sims), np.inf)
    some = mask.any(axis=1)
    thresholds[some] = np.nanquantile(np.where(mask[some], sims[some], np.nan), quantile, axis=1)
    return mask & (sims >= thresholds[:, None])


#: threshold strategies by name: ``accept(sims, idx, value) -> mask``
STRATEGIES = {"static": static_accept, "dynamic": dynamic_accept, "quantile": quantile_accept}


def min2(sims: np.ndarray, idx: np.ndarray, accepted: np.ndarray,
         loose_threshold: float) -> np.ndarray:
    """Give a posting that matched nothing its nearest neighbour, if above ``loose_threshold``.

    Every Shopee posting has at least one match, so a lonely prediction is
    probably a miss (the 1st-place team's "min-2" rule).
    """
    mask = real_neighbors(idx)
    out = accepted & mask
    lonely = ~out.any(axis=1)
    first = np.argmax(mask, axis=1)  # first real neighbour of each row
    rows = np.flatnonzero(lonely & mask.any(axis=1))
    good = sims[rows, first[rows]] >= loose_threshold
    out[rows[good], first[rows[good]]] = True
    return out


def sweep(sims: np.ndarray, idx: np.ndarray, labels: Sequence[int], values: Sequence[float],
          strategy: str = "static", sources: np.ndarray | None = None) -> pd.DataFrame:
    """Mean row-wise F1, mean match count and pair precision / recall / F1 (over ordered
    pairs, as :func:`~shopee_match.match.metrics.matrix_pair_scores`) for every value of a
    :data:`STRATEGIES` entry.

    Each row's neighbours are sorted by similarity once; a threshold then accepts a prefix of
    that order, found by binary search, and the row's F1 at any prefix length comes from
    cumulative sums of same-label flags. So every value costs ``O(n log K)`` instead of a fresh
    ``(n, K)`` mask and label gather. Equal (to 1e-12) to
    :func:`~shopee_match.match.metrics.neighbor_row_f1` of the strategy's mask, value by value
    (with ``sources``: lists searched across sources, true matches counted in that scope).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; known: {sorted(STRATEGIES)}")
    sims, idx, labels = np.asarray(sims), np.asarray(idx), np.asarray(labels)
    values = np.asarray(values, dtype=np.float64).ravel()
    sizes = scope_sizes(labels, sources)
    f1_sum = np.zeros(len(values))
    matches_sum = np.zeros(len(values))
    hits_sum = np.zeros(len(values))
    for start in range(0, len(idx), SWEEP_CHUNK_ROWS):  # chunks that stay in the CPU cache
        rows = slice(start, min(start + SWEEP_CHUNK_ROWS, len(idx)))
        real = (idx[rows] >= 0) & (idx[rows] != np.arange(rows.start, rows.stop)[:, None])
        order = np.argsort(np.where(real, -sims[rows].astype(np.float64), np.inf), axis=1,
                           kind="stable")
        ranked = np.take_along_axis(np.where(real, sims[rows], -np.inf), order, axis=1)
        same = (labels[np.where(real, idx[rows], 0)] == labels[rows, None]) & real
        same_before = np.zeros((len(real), idx.shape[1] + 1), dtype=np.int64)
        np.cumsum(np.take_along_axis(same, order, axis=1), axis=1, out=same_before[:, 1:])
        thresholds = _row_thresholds(sims[rows], real, values, strategy)  # (rows, V)
        accepted = np.minimum(_count_at_least(ranked, thresholds), real.sum(axis=1)[:, None])
        hits = np.take_along_axis(same_before, accepted, axis=1)
        f1_sum += (2.0 * (1 + hits) / (1 + accepted + sizes[rows, None])).sum(axis=0)
        matches_sum += accepted.sum(axis=0)
        hits_sum += hits.sum(axis=0)
    n = max(len(idx), 1)
    n_true = (sizes - 1).sum()
    return pd.DataFrame({
        "value": values, "f1": f1_sum / n, "mean_matches": 1 + matches_sum / n,
        "pair_precision": hits_sum / np.maximum(matches_sum, 1),
        "pair_recall": hits_sum / max(n_true, 1),
        "pair_f1": 2 * hits_sum / np.maximum(matches_sum + n_true, 1)})


def _row_thresholds(sims: np.ndarray, real: np.ndarray, values: np.ndarray,
                    strategy: str) -> np.ndarray:
    """``(n, V)`` threshold of every row at every value, computed as the strategy computes it
    (``real`` marks the entries that are other rows, as :func:`real_neighbors` does)."""
    n = len(sims)
    if strategy == "static":
        return np.broadcast_to(values, (n, len(values)))
    if strategy == "dynamic":
        mean, std = _masked_mean_std(sims, real)
        return mean[:, None] + values[None, :] * std[:, None]
    out = np.full((n, len(values)), np.inf)
    some = real.any(axis=1)
    if some.any():
        out[some] = np.nanquantile(np.where(real[some], sims[some], np.nan), values, axis=1).T
    return out


def _count_at_least(ranked: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For rows sorted in descending order, how many entries are ``>= thresholds[:, v]``.

    A branch-free binary search for all rows and values at once: every search interval has
    the same length at each step, so one ``take`` per step serves them all.
    """
    n, k = ranked.shape
    if k == 0:
        return np.zeros(thresholds.shape, dtype=np.int64)
    flat = np.ascontiguousarray(ranked).ravel()
    at = np.repeat((np.arange(n, dtype=np.int64) * k)[:, None], thresholds.shape[1], axis=1)
    length = k  # the count lies in [at - row start, that + length]
    while length > 1:
        half = length // 2
        at += np.where(np.take(flat, at + half) >= thresholds, half, 0)
        length -= half
    at += np.take(flat, at) >= thresholds
    return at - (np.arange(n, dtype=np.int64) * k)[:, None]
