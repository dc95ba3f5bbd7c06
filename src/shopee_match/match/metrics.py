"""Matching metrics.

Set-based metrics take Python sets (a set intersection per row is the fastest
form for id sets: ~0.05 s at 70k rows); :func:`neighbor_row_f1`,
:func:`matrix_row_f1` and :func:`retrieval_at_k` work on neighbour index arrays
or sparse match matrices with row labels, fully vectorised, for sweeps over
many thresholds.

Match sets are mappings ``posting_id -> collection of posting_ids`` (a dict or
a ``pd.Series`` such as :func:`shopee_match.data.splits.ground_truth` returns); a
predicted set may also be a space-separated string, as in ``submission.csv``. As
in the Kaggle competition, a posting's own id belongs to its true set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from shopee_match.match.neighbors import real_neighbors
from shopee_match.match.sources import drop_within_source, scope_sizes

MatchSets = Mapping[str, Iterable[str]] | pd.Series


def row_f1_scores(predicted: MatchSets, truth: MatchSets) -> pd.Series:
    """F1 between predicted and true match set of every posting (indexed like ``truth``)."""
    pred, true = _aligned_sets(predicted, truth)
    scores = [2.0 * len(p & t) / (len(p) + len(t)) for p, t in zip(pred, true)]
    return pd.Series(scores, index=_as_series(truth).index, name="f1", dtype=float)


def row_f1(predicted: MatchSets, truth: MatchSets) -> float:
    """Kaggle's Shopee metric: mean over postings of the row-wise F1."""
    return float(row_f1_scores(predicted, truth).mean())


def pairwise_scores(predicted: MatchSets, truth: MatchSets) -> dict[str, float]:
    """Precision, recall and F1 over ordered pairs (posting, other posting); self pairs ignored.

    A metric whose denominator is zero (no predicted or no true pairs) is 0.
    """
    pred, true = _aligned_sets(predicted, truth)
    tp = n_pred = n_true = 0
    for pid, p, t in zip(_as_series(truth).index, pred, true):
        tp += len(p & t) - (pid in p and pid in t)
        n_pred += len(p) - (pid in p)
        n_true += len(t) - (pid in t)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "true_positives": int(tp), "predicted_pairs": int(n_pred), "true_pairs": int(n_true)}


def scope_sets(sets: MatchSets, source_of: Mapping[str, object] | None) -> pd.Series:
    """Match sets restricted to the pairs in scope: with ``source_of`` (``posting_id ->
    source``) each set keeps the listing itself and the ids from other sources; without it,
    the sets as they are (a space-separated string is split)."""
    series = _as_series(sets)
    split = [set(v.split()) if isinstance(v, str) else set(v) for v in series]
    if source_of is not None:
        split = [{o for o in ids if o == pid or source_of[o] != source_of[pid]}
                 for pid, ids in zip(series.index, split)]
    return pd.Series(split, index=series.index, dtype=object)


def neighbor_row_f1(neighbors: np.ndarray, accepted: np.ndarray, labels: Sequence[int],
                    sources: np.ndarray | None = None) -> np.ndarray:
    """Row-wise F1 when each posting's matches are itself plus its accepted neighbours.

    The vectorised form used by threshold sweeps: ``neighbors`` is ``(n, K)``
    row indices (``-1`` pads; the query itself is ignored wherever it appears,
    since it is always in its own set), ``accepted`` a boolean ``(n, K)`` mask
    (e.g. ``sims >= threshold``) and ``labels`` the ``label_group`` of each row.
    Neighbour lists must not repeat an index. With ``sources`` only pairs across sources
    count (:mod:`shopee_match.match.sources`). Returns the F1 of every row.
    """
    neighbors = np.asarray(neighbors)
    labels = np.asarray(labels)
    if np.shape(accepted) != neighbors.shape or len(labels) != neighbors.shape[0]:
        raise ValueError(f"neighbors {neighbors.shape}, accepted {np.shape(accepted)} and "
                         f"{len(labels)} labels do not line up")
    valid = real_neighbors(neighbors) & accepted
    if sources is not None:
        valid &= sources[np.where(valid, neighbors, 0)] != sources[:, None]
    same = labels[np.where(valid, neighbors, 0)] == labels[:, None]
    inter = 1 + (valid & same).sum(axis=1)
    return 2.0 * inter / (1 + valid.sum(axis=1) + scope_sizes(labels, sources))


def matrix_row_f1(matches, labels: Sequence[int], sources: np.ndarray | None = None
                  ) -> np.ndarray:
    """Row-wise F1 of a sparse ``n x n`` match matrix (self included) against ``label_group``s;
    with ``sources`` over the pairs across sources only."""
    labels = np.asarray(labels)
    matches = drop_within_source(matches, sources)
    predicted = np.diff(matches.indptr)
    rows = np.repeat(np.arange(matches.shape[0]), predicted)
    hit = labels[rows] == labels[matches.indices]
    inter = np.bincount(rows, weights=hit, minlength=matches.shape[0])
    return 2.0 * inter / (predicted + scope_sizes(labels, sources))


def matrix_pair_scores(matches, labels: Sequence, sources: np.ndarray | None = None
                       ) -> dict[str, float]:
    """Precision, recall and F1 over the ordered pairs of a match matrix, as
    :func:`pairwise_scores` counts them (self pairs ignored; with ``sources`` only pairs across
    sources count, so within-shop duplicates a benchmark does not label are left out)."""
    labels = np.asarray(labels)
    coo = drop_within_source(matches, sources).tocoo()
    off = coo.row != coo.col
    tp = int((labels[coo.row[off]] == labels[coo.col[off]]).sum())
    n_pred = int(off.sum())
    n_true = int((scope_sizes(labels, sources) - 1).sum())
    return {"precision": tp / n_pred if n_pred else 0.0,
            "recall": tp / n_true if n_true else 0.0,
            "f1": 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0,
            "true_positives": tp, "predicted_pairs": n_pred, "true_pairs": n_true}


def bcubed(clusters: Sequence, labels: Sequence) -> dict[str, float]:
    """B-cubed precision, recall and F1 of a clustering: for each listing, the share of its
    cluster that is its product (precision) and of its product that is in its cluster
    (recall), averaged over listings; F1 is their harmonic mean (Amigó et al. 2009)."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    if clusters.shape != labels.shape:
        raise ValueError(f"{len(clusters)} cluster labels for {len(labels)} listings")
    _, both = np.unique(np.stack([np.unique(clusters, return_inverse=True)[1].ravel(),
                                  np.unique(labels, return_inverse=True)[1].ravel()]),
                        axis=1, return_inverse=True)
    shared = np.bincount(both.ravel())[both.ravel()]
    precision = float(np.mean(shared / group_sizes(clusters)))
    recall = float(np.mean(shared / group_sizes(labels)))
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def split_true_pairs(clusters: Sequence, labels: Sequence, sources: np.ndarray | None = None
                     ) -> float:
    """The share of true pairs (in scope) whose two listings end in different clusters."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    i, j = same_group_pairs(labels)
    if sources is not None:
        keep = sources[i] != sources[j]
        i, j = i[keep], j[keep]
    return float(np.mean(clusters[i] != clusters[j])) if len(i) else 0.0


def same_group_pairs(labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)`` of every pair of rows (i < j) that share a label group, group by group."""
    codes = np.unique(np.asarray(labels), return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")
    groups = [m for m in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
              if len(m) > 1]
    pairs = [(m, np.triu_indices(len(m), k=1)) for m in groups]
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate([m[a] for m, (a, _) in pairs] or [empty]).astype(np.int64),
            np.concatenate([m[b] for m, (_, b) in pairs] or [empty]).astype(np.int64))


def blocking_misses(neighbors: np.ndarray, labels: Sequence, sources: np.ndarray | None = None
                    ) -> dict[str, int]:
    """True pairs (unordered, in scope) that the candidate lists never offer in either
    direction: a second stage cannot rescue them, only a wider search can."""
    neighbors, labels = np.asarray(neighbors), np.asarray(labels)
    valid = real_neighbors(neighbors)
    rows = np.repeat(np.arange(len(neighbors)), valid.sum(axis=1)).astype(np.int64)
    cols = neighbors[valid].astype(np.int64)
    keep = labels[rows] == labels[cols]
    if sources is not None:
        keep &= sources[rows] != sources[cols]
    lo, hi = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    offered = len(np.unique(lo * len(labels) + hi))
    n_true = true_pair_count(labels, sources)
    return {"true_pairs": n_true, "offered": offered, "missed": n_true - offered}


def true_pair_count(labels: Sequence, sources: np.ndarray | None = None) -> int:
    """Unordered true pairs in scope: same label group (and, with ``sources``, across them)."""
    return int((scope_sizes(labels, sources) - 1).sum()) // 2


def pair_maxima(i: Sequence[int], j: Sequence[int], **columns: Sequence) -> pd.DataFrame:
    """Each column's higher value over the two directions of each unordered pair of the
    directed pairs ``(i[t], j[t])``, indexed by the pair's smaller and larger row, sorted."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    table = pd.DataFrame({"lo": np.minimum(i, j), "hi": np.maximum(i, j), **columns})
    return table.groupby(["lo", "hi"], sort=True).max()


def unordered_pair_scores(i: Sequence[int], j: Sequence[int], scores: Sequence[float],
                          is_match: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, is_match)`` of each unordered pair of the directed pairs ``(i[t], j[t])``
    once, with its higher score (a pair is accepted when either direction is), in the order
    of its smaller then larger row."""
    pairs = pair_maxima(i, j, score=np.asarray(scores, dtype=float),
                        match=np.asarray(is_match, dtype=bool))
    return pairs["score"].to_numpy(), pairs["match"].to_numpy()


def ranking_scores(neighbors: np.ndarray, scores: np.ndarray, labels: Sequence,
                   k: int = 10, sources: np.ndarray | None = None) -> dict[str, float]:
    """NDCG@k and MAP@k of each listing's candidates ordered by ``scores`` (a reranker's, or
    the similarities), averaged over listings with a true match in scope.

    ``neighbors``/``scores`` are ``(n, K)`` lists (self and ``-1`` padding ignored); the ideal
    ranking puts every true match of the listing first, counting those the lists missed, so
    blocking losses lower both figures.
    """
    neighbors, labels = np.asarray(neighbors), np.asarray(labels)
    valid = real_neighbors(neighbors)
    if sources is not None:
        valid &= sources[np.where(valid, neighbors, 0)] != sources[:, None]
    order = np.argsort(np.where(valid, -np.asarray(scores, dtype=np.float64), np.inf), axis=1,
                       kind="stable")[:, :k]
    taken = np.take_along_axis(valid, order, axis=1)
    hit = taken & (labels[np.take_along_axis(np.where(valid, neighbors, 0), order, axis=1)]
                   == labels[:, None])
    n_true = scope_sizes(labels, sources) - 1
    queries = n_true > 0
    discount = 1.0 / np.log2(np.arange(2, hit.shape[1] + 2))
    dcg = (hit * discount).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_true, hit.shape[1])]
    precision_at = np.cumsum(hit, axis=1) / np.arange(1, hit.shape[1] + 1)
    ap = (precision_at * hit).sum(axis=1) / np.maximum(np.minimum(n_true, hit.shape[1]), 1)
    if not queries.any():
        return {"ndcg": float("nan"), "map": float("nan"), "n_queries": 0}
    return {"ndcg": float(np.mean(dcg[queries] / ideal[queries])),
            "map": float(np.mean(ap[queries])), "n_queries": int(queries.sum())}


def group_sizes(labels: Sequence[int]) -> np.ndarray:
    """Size of each row's label group (itself included)."""
    return scope_sizes(labels)


def require_both_classes(is_match: Sequence[bool], what: str) -> None:
    """Stop with a clear message when pairs are all matching or all non-matching (nothing to
    rank or score on them: too few label groups)."""
    n_pos, n = int(np.sum(is_match)), len(is_match)
    if n_pos == 0 or n_pos == n:
        raise ValueError(f"{what} needs both matching and non-matching pairs; got {n_pos} "
                         f"matching of {n}. The data has too few label groups here: use a "
                         "dataset with more labelled products.")


def pair_auc(scores: Sequence[float], is_match: Sequence[bool]) -> dict[str, float]:
    """ROC-AUC and average precision of pair scores (higher = more likely the same product)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.asarray(scores, dtype=float)
    is_match = np.asarray(is_match, dtype=bool)
    if scores.shape != is_match.shape:
        raise ValueError(f"{scores.shape[0]} scores but {is_match.shape[0]} labels")
    require_both_classes(is_match, "AUC")
    return {"roc_auc": float(roc_auc_score(is_match, scores)),
            "average_precision": float(average_precision_score(is_match, scores))}


def precision_threshold(scores: Sequence[float], is_match: Sequence[bool],
                        min_precision: float) -> float | None:
    """The lowest score threshold at which the pairs scoring at least it are
    ``min_precision`` correct (the most recall at that precision), or None when none is."""
    from sklearn.metrics import precision_recall_curve

    is_match = np.asarray(is_match, dtype=bool)
    if not is_match.any():
        return None
    precision, _, thresholds = precision_recall_curve(is_match, np.asarray(scores, float))
    reach = np.flatnonzero(precision[:-1] >= min_precision)  # thresholds ascend
    return float(thresholds[reach[0]]) if len(reach) else None


def operating_point(val_scores: Sequence[float], val_match: Sequence[bool],
                    test_scores: Sequence[float], test_match: Sequence[bool],
                    min_precision: float = 0.95, val_true: int | None = None,
                    test_true: int | None = None) -> dict[str, float] | None:
    """The high-precision operating point of a pair scorer, chosen on val
    (:func:`precision_threshold`), with val and test precision and recall there. None when
    no threshold reaches ``min_precision`` on val.

    Recall counts the scored pairs' matches, or ``val_true`` / ``test_true`` true pairs when
    given (all true pairs in scope, :func:`true_pair_count`: those that blocking never offered
    count as missed, as in the pair recall of :func:`matrix_pair_scores`)."""
    t = precision_threshold(val_scores, val_match, min_precision)
    if t is None:
        return None
    val = thresholded_pair_scores(val_scores, val_match, t, val_true)
    test = thresholded_pair_scores(test_scores, test_match, t, test_true)
    return {"threshold": t, "val precision": val["precision"], "val recall": val["recall"],
            "test precision": test["precision"], "test recall": test["recall"]}


def thresholded_pair_scores(scores: Sequence[float], is_match: Sequence[bool], threshold: float,
                            n_true: int | None = None) -> dict[str, float]:
    """Precision, recall and F1 of accepting the pairs scoring at least ``threshold``; recall
    over ``n_true`` true pairs when given (all in scope, offered or not), else over the
    scored pairs' matches."""
    accepted, is_match = np.asarray(scores, float) >= threshold, np.asarray(is_match, bool)
    hits = int((accepted & is_match).sum())
    n_true = int(is_match.sum()) if n_true is None else n_true
    precision = float(hits / accepted.sum()) if accepted.any() else 0.0
    recall = float(hits / n_true) if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def retrieval_at_k(
    neighbors: np.ndarray, labels: Sequence[int], ks: Iterable[int] = (1, 5, 10, 20, 50),
    query_rows: np.ndarray | None = None, sources: np.ndarray | None = None,
) -> pd.DataFrame:
    """Recall@K and hit@K from neighbour lists, the query itself excluded.

    ``neighbors`` is an ``(n, K')`` array of row indices, nearest first; ``-1``
    pads short lists and the query's own index is skipped wherever it appears,
    so pass ``K' >= k + 1`` columns when lists include the query. For every
    query with at least one other member in its group: recall@K = the share of
    those members among its first K neighbours; hit@K = 1 if any is. Both are
    averaged over those queries; lone postings (``n_lone``) are left out.
    ``query_rows`` says which rows of the gallery (``labels``) the lists belong to, when
    only a sample of the listings was searched (default: all, in order). With ``sources``
    only matches from other sources count (and only they are in the denominator).
    """
    neighbors = np.asarray(neighbors)
    labels = np.asarray(labels)
    rows_given = query_rows is not None
    query_rows = np.asarray(query_rows) if rows_given else np.arange(len(labels))
    if neighbors.ndim != 2 or neighbors.shape[0] != len(query_rows):
        raise ValueError(
            f"neighbors must be (n, K) with n = {len(query_rows)} "
            f"{'query rows' if rows_given else 'labels'}; got {neighbors.shape}"
        )
    ks = sorted(set(int(k) for k in ks))
    if ks[0] < 1 or ks[-1] > neighbors.shape[1]:
        raise ValueError(f"each k must be in 1..{neighbors.shape[1]} (columns given); got {ks}")
    valid = (neighbors >= 0) & (neighbors != query_rows[:, None])
    rank = np.cumsum(valid, axis=1)
    positive = valid & (labels[np.where(valid, neighbors, 0)] == labels[query_rows, None])
    if sources is not None:
        positive &= sources[np.where(valid, neighbors, 0)] != sources[query_rows, None]
    n_pos = scope_sizes(labels, sources)[query_rows] - 1
    queries = n_pos > 0
    rows = []
    for k in ks:
        found = (positive & (rank <= k)).sum(axis=1)[queries]
        rows.append({"k": k, "recall": float(np.mean(found / n_pos[queries])) if queries.any()
                     else float("nan"),
                     "hit": float(np.mean(found > 0)) if queries.any() else float("nan")})
    out = pd.DataFrame(rows)
    out["n_queries"] = int(queries.sum())
    out["n_lone"] = int(len(query_rows) - queries.sum())
    return out


def _as_series(sets: MatchSets) -> pd.Series:
    if isinstance(sets, pd.Series):
        return sets
    if isinstance(sets, Mapping):
        return pd.Series(list(sets.values()), index=list(sets.keys()), dtype=object)
    raise TypeError(
        f"match sets must be a dict or pd.Series of posting_id -> ids, not {type(sets).__name__}"
    )


def _aligned_sets(predicted: MatchSets, truth: MatchSets) -> tuple[list[set], list[set]]:
    """Predicted and true sets as Python sets, in the order of ``truth``."""
    true = _as_series(truth)
    pred = _as_series(predicted)
    if not true.index.is_unique:
        raise ValueError("truth has repeated posting_ids")
    missing = true.index.difference(pred.index)
    if len(missing):
        raise ValueError(
            f"{len(missing)} posting(s) have no prediction, e.g. {list(missing[:5])}; "
            "give every posting a set (it may hold only itself)."
        )
    true_sets = [t if isinstance(t, (set, frozenset)) else set(t) for t in true]
    if any(not t for t in true_sets):
        raise ValueError("every true match set must hold at least the posting itself")
    pred_sets = [set(p.split()) if isinstance(p, str) else
                 p if isinstance(p, (set, frozenset)) else set(p)
                 for p in pred.reindex(true.index)]
    return pred_sets, true_sets


def labelled_pairs(labels: Sequence[int], n_negative: int = 100_000, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, is_match)``: every same-group pair (i < j) plus random different-group pairs.

    For similarity histograms and pair AUCs without scoring all n² pairs.
    ``n_negative`` random pairs are drawn and same-group or self draws dropped.
    """
    labels = np.unique(np.asarray(labels), return_inverse=True)[1]  # any label type -> codes
    pos_i, pos_j = same_group_pairs(labels)
    rng = np.random.default_rng(seed)
    neg_i = rng.integers(0, len(labels), size=n_negative)
    neg_j = rng.integers(0, len(labels), size=n_negative)
    keep = labels[neg_i] != labels[neg_j]
    i = np.concatenate([pos_i, neg_i[keep]]).astype(np.int64)
    j = np.concatenate([pos_j, neg_j[keep]]).astype(np.int64)
    return i, j, np.arange(len(i)) < len(pos_i)
