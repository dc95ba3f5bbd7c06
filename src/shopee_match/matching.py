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

from shopee_match.matcher import MAX_COMPONENT
from shopee_match.metrics import group_sizes
from shopee_match.neighbors import index_dtype, real_neighbors

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


def query_rows(idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The query row of every entry ``mask`` selects, in the order ``idx[mask]`` lists them
    (in ``idx``'s dtype: int32 for lists of fewer than 2**31 rows)."""
    return np.repeat(np.arange(len(idx), dtype=idx.dtype), mask.sum(axis=1))


def to_matrix(idx: np.ndarray, accepted: np.ndarray) -> sparse.csr_matrix:
    """Boolean ``n x n`` matrix of predicted matches, the diagonal (self) included."""
    return pairs_to_matrix(query_rows(idx, accepted), idx[accepted], len(idx))


def union(*matrices: sparse.csr_matrix) -> sparse.csr_matrix:
    """Union of predicted match matrices (e.g. image ∪ text ∪ fused)."""
    out = matrices[0].astype(bool)
    for m in matrices[1:]:
        out = out + m.astype(bool)
    return out.tocsr()


def connected_components(matches: sparse.csr_matrix, strength: sparse.spmatrix | None = None,
                         max_size: int = MAX_COMPONENT) -> sparse.csr_matrix:
    """Transitive closure: every posting matches its whole connected component, a component
    being cut at its weakest edges (``strength``, e.g. the fused similarity of each pair)
    until none is larger than ``max_size`` (:func:`capped_components`). Components are found
    as labels; only the capped closure is expanded (at most ``n * max_size`` pairs)."""
    clusters, _ = component_labels(matches, strength, max_size)
    return cluster_matrix(clusters)


def component_labels(matches: sparse.spmatrix, strength: sparse.spmatrix | None = None,
                     max_size: int = MAX_COMPONENT) -> tuple[np.ndarray, int]:
    """``(labels, dropped)``: each posting's component among the match pairs (either
    direction), none larger than ``max_size``, and the number of pairs cut to get there."""
    upper = sparse.triu(matches + matches.T, k=1).tocoo()
    i, j = upper.row, upper.col
    if strength is None:
        weights = np.ones(len(i))
    else:
        both = strength.maximum(strength.T).tocsr()
        weights = np.asarray(both[i, j]).ravel() if len(i) else np.zeros(0)
    return capped_components(i, j, weights, matches.shape[0], max_size)


def capped_components(i: np.ndarray, j: np.ndarray, scores: np.ndarray, n: int,
                      max_size: int) -> tuple[np.ndarray, int]:
    """Clusters of ``n`` rows from accepted pairs ``(i, j)``, none larger than ``max_size``.

    Components are labelled first (scipy, no pair expanded); inside each one larger than
    ``max_size`` edges join rows strongest first (union-find) and an edge that would make a
    cluster larger than ``max_size`` is dropped, so chains are cut at their weakest links.
    Returns each row's cluster id (0..c-1, in order of first row) and the number of pairs
    dropped.
    """
    from scipy.sparse.csgraph import connected_components as components

    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    graph = sparse.csr_matrix((np.ones(len(i), dtype=bool), (i, j)), shape=(n, n))
    _, labels = components(graph, directed=False)
    sizes = np.bincount(labels, minlength=1)
    big = np.flatnonzero(sizes > max_size)
    dropped = 0
    if len(big):
        parent = np.arange(n)
        size = np.ones(n, dtype=np.int64)

        def root(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        inside = np.flatnonzero(np.isin(labels[i], big))
        inside = inside[np.argsort(-np.asarray(scores, dtype=np.float64)[inside], kind="stable")]
        for a, b in _edges(i, j, inside):
            ra, rb = root(a), root(b)
            if ra == rb:
                continue
            if size[ra] + size[rb] > max_size:
                dropped += 1
                continue
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
        rows = np.flatnonzero(np.isin(labels, big))
        roots = np.array([root(x) for x in rows.tolist()], dtype=np.int64)
        labels = labels.astype(np.int64)
        labels[rows] = len(sizes) + roots  # new ids apart from the small components'
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(first)] = np.arange(len(first))
    return order[inverse], dropped


def _edges(i: np.ndarray, j: np.ndarray, order: np.ndarray, block: int = 65_536):
    """Pairs ``(i[e], j[e])`` for ``e`` in ``order``, as Python ints made a block at a time
    (12.5M edges at once would be two lists of ~450 MB)."""
    for lo in range(0, len(order), block):
        yield from zip(i[order[lo:lo + block]].tolist(), j[order[lo:lo + block]].tolist())


def cluster_matrix(clusters: np.ndarray) -> sparse.csr_matrix:
    """Boolean match matrix in which every row matches its whole cluster."""
    one_hot = sparse.csr_matrix((np.ones(len(clusters), dtype=bool),
                                 (np.arange(len(clusters)), clusters)))
    return (one_hot @ one_hot.T).astype(bool).tocsr()


def similarity_matrix(sims: np.ndarray, idx: np.ndarray) -> sparse.csr_matrix:
    """Sparse ``n x n`` similarities of every listed neighbour pair (edge strengths)."""
    mask = real_neighbors(idx)
    return sparse.csr_matrix((sims[mask].astype(np.float32), (query_rows(idx, mask), idx[mask])),
                             shape=(len(idx), len(idx)))


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
    """Mean row-wise F1 and mean match count for every value of a :data:`STRATEGIES` entry.

    Each row's neighbours are sorted by similarity once; a threshold then accepts a prefix of
    that order, found by binary search, and the row's F1 at any prefix length comes from
    cumulative sums of same-label flags. So every value costs ``O(n log K)`` instead of a fresh
    ``(n, K)`` mask and label gather. Equal (to 1e-12) to
    :func:`~shopee_match.metrics.neighbor_row_f1` of the strategy's mask, value by value.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; known: {sorted(STRATEGIES)}")
    sims, idx, labels = np.asarray(sims), np.asarray(idx), np.asarray(labels)
    values = np.asarray(values, dtype=np.float64).ravel()
    sizes = group_sizes(labels)
    f1_sum = np.zeros(len(values))
    matches_sum = np.zeros(len(values))
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
    n = max(len(idx), 1)
    return pd.DataFrame({"value": values, "f1": f1_sum / n, "mean_matches": 1 + matches_sum / n})


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


def candidate_pairs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, rank)`` for every real neighbour j of every query i (rank 1 = nearest other)."""
    mask = real_neighbors(idx)
    rank = np.cumsum(mask, axis=1)
    return query_rows(idx, mask), idx[mask], rank[mask]


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


#: pairs per chunk in :func:`pair_probabilities`
SCORE_CHUNK = 262_144


def pair_probabilities(model, features: pd.DataFrame) -> np.ndarray:
    """A fitted pair classifier's match probability for every row of ``features``, scored in
    chunks of :data:`SCORE_CHUNK` pairs: the float64 matrix it is given and its scaler's copy
    of it are made a chunk at a time, not for millions of pairs at once."""
    out = np.empty(len(features))
    for lo in range(0, len(features), SCORE_CHUNK):
        chunk = features.iloc[lo:lo + SCORE_CHUNK].to_numpy()
        out[lo:lo + len(chunk)] = model.predict_proba(chunk)[:, 1]
    return out


def pairs_to_matrix(i: np.ndarray, j: np.ndarray, n: int) -> sparse.csr_matrix:
    """Boolean ``n x n`` match matrix holding the pairs ``(i, j)`` and the diagonal."""
    diagonal = np.arange(n, dtype=index_dtype(n))  # int32 below 2**31 rows, as lists hold
    rows = np.concatenate([np.asarray(i, dtype=diagonal.dtype), diagonal])
    cols = np.concatenate([np.asarray(j, dtype=diagonal.dtype), diagonal])
    m = sparse.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    return m


def fused_neighbors(vectors: dict, weights: dict, k: int, blend_rounds: int = 0,
                    blend_top_n: int = 3, cache: dict | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Self-search lists ``(sims, idx)`` of the weighted fusion of ``vectors`` (``k`` columns,
    the query usually first), after ``blend_rounds`` of neighbourhood blending.

    A single modality is searched as it is (so sparse TF-IDF works alone); galleries above
    200,000 rows through an IVF index (:func:`~shopee_match.neighbors.self_knn`). Results are
    kept in ``cache`` (a dict per gallery) under the weights, ``k`` and blending.
    """
    from shopee_match.neighbors import self_knn

    cache = {} if cache is None else cache
    key = ("fused", tuple(sorted(weights.items())), k, blend_rounds, blend_top_n)
    if key not in cache:
        fused = fused_vectors(vectors, weights)
        sims, idx = self_knn(fused, k=k)
        for _ in range(blend_rounds):
            fused = blend(fused, sims, idx, blend_top_n)
            sims, idx = self_knn(fused, k=k)
        cache[key] = sims, idx
    return cache[key]


def fused_vectors(vectors: dict, weights: dict):
    """The vectors :func:`fused_neighbors` searches: a single modality as it is (so sparse
    TF-IDF works alone), else the weighted fusion of the modalities with weight > 0."""
    from shopee_match.neighbors import fuse

    used = [m for m, w in weights.items() if w > 0]
    missing = [m for m in used if m not in vectors]
    if missing:
        raise ValueError(f"no vectors for modality {missing}; have {sorted(vectors)}")
    return vectors[used[0]] if len(used) == 1 else fuse({m: vectors[m] for m in used}, weights)


def candidate_pair_features(vectors: dict, config, phash: Sequence[str] | None = None,
                            cache: dict | None = None
                            ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``(i, j, features)`` of one gallery's candidate pairs: the top ``config.k`` fused
    neighbours of every listing (:func:`pair_features`), kept in ``cache``."""
    cache = {} if cache is None else cache
    key = ("pair_features", *_fused_key(config))
    if key not in cache:
        sims, idx = fused_neighbors(vectors, config.fusion_weights, config.k + 1,
                                    config.blend_rounds, config.blend_top_n, cache)
        i, j, rank = candidate_pairs(idx)
        cache[key] = i, j, pair_features(i, j, rank, vectors, sims, idx, phash)
    return cache[key]


def _fused_key(config) -> tuple:
    return (tuple(sorted(config.fusion_weights.items())), config.k, config.blend_rounds,
            config.blend_top_n)


def pair_training_data(vectors: dict, labels: Sequence[int], config,
                       phash: Sequence[str] | None = None, cache: dict | None = None
                       ) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and labels (same group or not) of one gallery's candidate pairs, as the pair
    classifier sees them (:func:`candidate_pair_features`)."""
    i, j, features = candidate_pair_features(vectors, config, phash, cache)
    labels = np.asarray(labels)
    return features, labels[i] == labels[j]


def predict_matches(vectors: dict, config, model=None, phash: Sequence[str] | None = None,
                    cache: dict | None = None, titles: Sequence[str] | None = None
                    ) -> sparse.csr_matrix:
    """Apply a :class:`~shopee_match.matcher.MatchConfig` to one gallery's vectors.

    ``vectors`` maps modality -> array (``tfidf`` may be sparse) and must hold
    ``config.modalities``; ``model`` is the fitted second stage when the config has one
    (the cross-encoder kinds also read the ``titles``).
    Pass the same ``cache`` dict on every call over one gallery (a sweep) to reuse
    neighbour lists, pair features and second-stage scores that do not depend on the knob
    being tuned (the model is keyed by identity: do not refit one that scored into a cache).
    """
    cache = {} if cache is None else cache
    k = config.k + 1
    sims, idx = fused_neighbors(vectors, config.fusion_weights, k, config.blend_rounds,
                                config.blend_top_n, cache)
    if config.second_stage is not None:
        i, j, scores = second_stage_scores(vectors, config, model, phash, cache, titles)
        keep = scores >= config.second_stage.threshold
        matches = pairs_to_matrix(i[keep], j[keep], len(idx))
    else:
        accepted = STRATEGIES[config.strategy](sims, idx, config.value)
        if config.min2 is not None:
            accepted = min2(sims, idx, accepted, config.min2)
        matches = to_matrix(idx, accepted)
    for modality, threshold in config.union.items():
        s, i = fused_neighbors(vectors, {modality: 1.0}, k, cache=cache)
        matches = union(matches, to_matrix(i, static_accept(s, i, threshold)))
    if config.components:
        matches = connected_components(matches, similarity_matrix(sims, idx),
                                       config.max_component)
    return matches


def second_stage_scores(vectors: dict, config, model, phash: Sequence[str] | None = None,
                        cache: dict | None = None, titles: Sequence[str] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, scores)``: a configuration's candidate pairs and its fitted second stage's
    score of each, scored once per gallery (``cache``) whatever the threshold."""
    cache = {} if cache is None else cache
    if model is None:
        raise ValueError(f"this configuration needs its fitted {config.second_stage.kind} "
                         f"({config.second_stage.file})")
    kind = config.second_stage.kind
    if kind != "pair_classifier" and titles is None:
        raise ValueError(f"the {kind} second stage needs the titles")
    i, j, feats = candidate_pair_features(vectors, config, phash, cache)
    key = ("second_stage", kind, model, *_fused_key(config))  # the model by identity
    if key not in cache:
        if len(i) == 0:  # e.g. a one-listing test set: no pairs to score
            cache[key] = np.zeros(0)
        elif kind == "pair_classifier":
            cache[key] = pair_probabilities(model, feats)
        else:
            cache[key] = model.score(feats, titles, i, j, cache)
    return i, j, cache[key]
