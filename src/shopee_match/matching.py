"""From neighbour lists to predicted match sets.

Neighbour lists are ``(sims, idx)`` arrays as :mod:`shopee_match.neighbors`
returns them (row indices into the same postings, nearest first, ``-1``
padding, the query itself usually in column 0). A strategy turns them into an
``accepted`` mask of the same shape; a posting's predicted set is itself plus
its accepted neighbours. Sets from several modalities are combined as sparse
``n x n`` boolean matrices (:func:`to_matrix`, :func:`union`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from shopee_match.metrics import neighbor_row_f1
from shopee_match.neighbors import real_neighbors


def static_accept(sims: np.ndarray, idx: np.ndarray, threshold: float) -> np.ndarray:
    """Accept neighbours whose similarity is at least ``threshold``."""
    return real_neighbors(idx) & (sims >= threshold)


def neighbor_sim_stats(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each query's neighbour similarities (self, padding out)."""
    mask = real_neighbors(idx)
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


def to_matrix(idx: np.ndarray, accepted: np.ndarray) -> sparse.csr_matrix:
    """Boolean ``n x n`` matrix of predicted matches, the diagonal (self) included."""
    rows = np.repeat(np.arange(len(idx)), accepted.sum(axis=1))
    return pairs_to_matrix(rows, idx[accepted], len(idx))


def union(*matrices: sparse.csr_matrix) -> sparse.csr_matrix:
    """Union of predicted match matrices (e.g. image ∪ text ∪ fused)."""
    out = matrices[0].astype(bool)
    for m in matrices[1:]:
        out = out + m.astype(bool)
    return out.tocsr()


def connected_components(matches: sparse.csr_matrix) -> sparse.csr_matrix:
    """Transitive closure: every posting matches its whole connected component."""
    from scipy.sparse.csgraph import connected_components as components

    _, comp = components(matches, directed=False)
    one_hot = sparse.csr_matrix((np.ones(len(comp), dtype=bool),
                                 (np.arange(len(comp)), comp)))
    return (one_hot @ one_hot.T).astype(bool).tocsr()


def matrix_to_sets(matches: sparse.csr_matrix, ids: Sequence[str]) -> pd.Series:
    """``posting_id -> set of posting_ids`` from a match matrix."""
    ids = np.asarray(ids, dtype=object)
    matches = matches.tocsr()
    return pd.Series([set(ids[matches.indices[a:b]]) for a, b in
                      zip(matches.indptr[:-1], matches.indptr[1:])], index=ids, dtype=object)


def blend(vectors: np.ndarray, sims: np.ndarray, idx: np.ndarray, top_n: int = 3
          ) -> np.ndarray:
    """Neighbourhood blending (query expansion): each vector becomes the similarity-weighted
    sum of its ``top_n`` nearest vectors (itself included, as column 0 usually is), renormalised.
    """
    take = idx[:, :top_n]
    weights = np.where(take >= 0, np.maximum(sims[:, :top_n], 0), 0).astype(np.float32)
    mixed = np.einsum("nk,nkd->nd", weights, vectors[np.where(take >= 0, take, 0)])
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return (mixed / np.maximum(norms, 1e-12)).astype(np.float32)


def sweep(sims: np.ndarray, idx: np.ndarray, labels: Sequence[int], values: Sequence[float],
          strategy: str = "static") -> pd.DataFrame:
    """Mean row-wise F1 and mean match count for every value of a :data:`STRATEGIES` entry."""
    accept = STRATEGIES[strategy]
    labels = np.asarray(labels)
    rows = []
    for value in values:
        accepted = accept(sims, idx, value)
        rows.append({"value": float(value),
                     "f1": float(neighbor_row_f1(idx, accepted, labels).mean()),
                     "mean_matches": float(1 + accepted.sum(axis=1).mean())})
    return pd.DataFrame(rows)


def candidate_pairs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, rank)`` for every real neighbour j of every query i (rank 1 = nearest other)."""
    mask = real_neighbors(idx)
    rank = np.cumsum(mask, axis=1)
    i = np.repeat(np.arange(len(idx)), mask.sum(axis=1))
    return i, idx[mask], rank[mask]


def pair_features(i: np.ndarray, j: np.ndarray, rank: np.ndarray, vectors: dict,
                  sims: np.ndarray, idx: np.ndarray, phash: Sequence[str] | None = None
                  ) -> pd.DataFrame:
    """Features of candidate pairs for the pair classifier.

    One similarity per modality in ``vectors`` (``sim_<name>``, names sorted), the neighbour
    rank, the query's neighbour-similarity mean and std (from ``sims``/``idx``,
    usually the fused lists) and, if given, whether the two photos share a phash.
    """
    from shopee_match.neighbors import pair_cosine

    mean, std = neighbor_sim_stats(sims, idx)
    features = {f"sim_{name}": pair_cosine(vectors[name], i, j) for name in sorted(vectors)}
    features |= {"rank": rank.astype(np.float32), "query_sim_mean": mean[i],
                 "query_sim_std": std[i]}
    if phash is not None:
        phash = np.asarray(phash, dtype=object)
        features["same_phash"] = (phash[i] == phash[j]).astype(np.float32)
    return pd.DataFrame(features)


def fit_pair_classifier(features: pd.DataFrame, is_match: np.ndarray, seed: int = 0):
    """Logistic regression on standardised pair features (scikit-learn pipeline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(is_match)) < 2:
        raise ValueError("the pair classifier needs matching and non-matching candidate pairs")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    return model.fit(features.to_numpy(), np.asarray(is_match, dtype=bool))


def pairs_to_matrix(i: np.ndarray, j: np.ndarray, n: int) -> sparse.csr_matrix:
    """Boolean ``n x n`` match matrix holding the pairs ``(i, j)`` and the diagonal."""
    rows = np.concatenate([i, np.arange(n)])
    cols = np.concatenate([j, np.arange(n)])
    m = sparse.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    return m


def predict_matches(vectors: dict, config: dict, pair_model=None,
                    phash: Sequence[str] | None = None, cache: dict | None = None
                    ) -> sparse.csr_matrix:
    """Apply a matching configuration (as notebook 03 saves it) to one gallery's vectors.

    ``vectors`` maps modality -> array (``tfidf`` may be sparse); ``config`` keys:
    ``fusion_weights`` (dense modalities fused), ``k`` (neighbours), ``blend_rounds``
    and ``blend_top_n``, then either ``pair_threshold`` (with a fitted ``pair_model``)
    or ``strategy`` (static/dynamic/quantile) + ``value``, optional ``min2``
    (loose threshold) and ``union`` ({modality: static threshold}).
    Pass the same ``cache`` dict on every call over one gallery (a sweep) to reuse
    neighbour lists that do not depend on the knob being tuned.
    """
    from shopee_match.neighbors import exact_knn, fuse

    cache = {} if cache is None else cache
    k = config.get("k", 50) + 1
    weights = config["fusion_weights"]
    rounds, top_n = config.get("blend_rounds", 0), config.get("blend_top_n", 3)
    key = ("fused", tuple(sorted(weights.items())), k, rounds, top_n)
    if key not in cache:
        fused = fuse({m: v for m, v in vectors.items() if m in weights}, weights)
        sims, idx = exact_knn(fused, k=k)
        for _ in range(rounds):
            fused = blend(fused, sims, idx, top_n)
            sims, idx = exact_knn(fused, k=k)
        cache[key] = sims, idx
    sims, idx = cache[key]
    if config.get("pair_threshold") is not None:
        if pair_model is None:
            raise ValueError("this configuration needs the fitted pair classifier")
        i, j, rank = candidate_pairs(idx)
        feats = pair_features(i, j, rank, vectors, sims, idx, phash)
        keep = pair_model.predict_proba(feats.to_numpy())[:, 1] >= config["pair_threshold"]
        matches = pairs_to_matrix(i[keep], j[keep], len(idx))
    else:
        accepted = STRATEGIES[config["strategy"]](sims, idx, config["value"])
        if config.get("min2") is not None:
            accepted = min2(sims, idx, accepted, config["min2"])
        matches = to_matrix(idx, accepted)
    for modality, threshold in (config.get("union") or {}).items():
        if ("modality", modality, k) not in cache:
            cache["modality", modality, k] = exact_knn(vectors[modality], k=k)
        s, i = cache["modality", modality, k]
        matches = union(matches, to_matrix(i, static_accept(s, i, threshold)))
    if config.get("components"):
        matches = connected_components(matches)
    return matches
