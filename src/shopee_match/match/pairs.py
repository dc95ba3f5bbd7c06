"""Candidate pairs (each listing and its neighbours) and the features a second stage reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shopee_match.match.neighbors import pair_cosine, query_rows, real_neighbors
from shopee_match.match.thresholds import neighbor_sim_stats


def candidate_pairs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, rank)`` for every real neighbour j of every query i (rank 1 = nearest other)."""
    mask = real_neighbors(idx)
    rank = np.cumsum(mask, axis=1)
    return query_rows(idx, mask), idx[mask], rank[mask]


def list_scores(idx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores of the pairs of :func:`candidate_pairs` (in its order) put back in place of
    each listing's neighbours: an ``idx``-shaped array, ``-inf`` for the listing itself and
    padding (to rank neighbours by a second stage, e.g. for NDCG)."""
    mask = real_neighbors(idx)
    if len(scores) != mask.sum():
        raise ValueError(f"{len(scores)} scores for {int(mask.sum())} candidate pairs")
    out = np.full(idx.shape, -np.inf)
    out[mask] = scores
    return out


def pair_features(i: np.ndarray, j: np.ndarray, rank: np.ndarray, vectors: dict,
                  sims: np.ndarray, idx: np.ndarray, phash: Sequence[str] | None = None
                  ) -> pd.DataFrame:
    """Features of candidate pairs for the pair classifier.

    One similarity per modality in ``vectors`` (``sim_<name>``, names sorted), the neighbour
    rank, the query's neighbour-similarity mean and std (from ``sims``/``idx``,
    usually the fused lists) and, if given, whether the two photos share a phash.
    """
    mean, std = neighbor_sim_stats(sims, idx)
    features = {f"sim_{name}": pair_cosine(vectors[name], i, j) for name in sorted(vectors)}
    features |= {"rank": rank.astype(np.float32), "query_sim_mean": mean[i],
                 "query_sim_std": std[i]}
    if phash is not None:
        phash = np.asarray(phash, dtype=object)
        features["same_phash"] = (phash[i] == phash[j]).astype(np.float32)
    return pd.DataFrame(features)


def with_ce(features: pd.DataFrame, ce: np.ndarray) -> pd.DataFrame:
    """Pair features with the cross-encoder's probability as one more column
    (``cross_encoder``), as the reranker's classifier reads them."""
    return features.assign(cross_encoder=np.asarray(ce, dtype=np.float32))
