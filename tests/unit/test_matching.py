"""Matching strategies on hand-made neighbour lists, and agreement between F1 forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from shopee_match.match import second_stage, thresholds
from shopee_match.match.components import capped_components, connected_components
from shopee_match.match.decision import candidate_pair_features, predict_matches
from shopee_match.match.fusion import blend
from shopee_match.match.gallery import Gallery
from shopee_match.match.matrices import matrix_to_sets, pairs_to_matrix, to_matrix, union
from shopee_match.match.metrics import matrix_row_f1, neighbor_row_f1, row_f1
from shopee_match.match.pairs import candidate_pairs, pair_features
from shopee_match.match.second_stage import PairClassifier
from shopee_match.match.thresholds import (
    STRATEGIES,
    dynamic_accept,
    dynamic_thresholds,
    min2,
    quantile_accept,
    static_accept,
    sweep,
)

SIMS = np.array([[1.0, 0.9, 0.5, 0.1],
                 [1.0, 0.9, 0.2, 0.1],
                 [1.0, 0.3, 0.2, 0.1],
                 [1.0, 0.8, 0.7, 0.6]], dtype=np.float32)
IDX = np.array([[0, 1, 2, 3],
                [1, 0, 3, 2],
                [2, 3, 0, -1],
                [3, 2, 1, 0]])
LABELS = np.array([7, 7, 8, 8])


def test_static_accept_skips_self_and_padding():
    acc = static_accept(SIMS, IDX, 0.25)
    assert acc.tolist() == [[False, True, True, False], [False, True, False, False],
                            [False, True, False, False], [False, True, True, True]]


def test_dynamic_threshold_hand_computed():
    # row 0 neighbours 0.9, 0.5, 0.1: mean 0.5, std sqrt(0.32 / 3)
    thr = dynamic_thresholds(SIMS, IDX, 1.0)
    assert thr[0] == pytest.approx(0.5 + np.sqrt(0.32 / 3), rel=1e-6)
    # row 2 has two real neighbours (0.3, 0.2): padding ignored
    assert thr[2] == pytest.approx(0.25 + 0.05, rel=1e-6)
    acc = dynamic_accept(SIMS, IDX, 1.0)
    assert acc[0].tolist() == [False, True, False, False]
    assert acc[2].tolist() == [False, True, False, False]


def test_quantile_accept_keeps_the_top_share():
    acc = quantile_accept(SIMS, IDX, 0.5)
    assert acc[3].tolist() == [False, True, True, False]  # median of 0.8, 0.7, 0.6


def test_min2_adds_nearest_only_for_lonely_rows_above_loose_threshold():
    acc = static_accept(SIMS, IDX, 0.95)  # nobody matches
    out = min2(SIMS, IDX, acc, loose_threshold=0.5)
    assert out[:, 1].tolist() == [True, True, False, True]  # row 2's nearest is only 0.3
    assert out.sum() == 3


def test_pairs_of_neighbour_lists_equal_a_plain_loop():
    from shopee_match.match.matrices import similarity_matrix
    from shopee_match.match.neighbors import query_rows

    idx = IDX.astype(np.int32)  # lists as the searches return them
    expected = [(q, int(n), r) for q, row in enumerate(idx)
                for r, n in enumerate((n for n in row if n >= 0 and n != q), start=1)]
    i, j, rank = candidate_pairs(idx)
    assert list(zip(i.tolist(), j.tolist(), rank.tolist())) == expected
    assert i.dtype == np.int32 and query_rows(IDX, IDX >= 0).dtype == np.int64
    strengths = similarity_matrix(SIMS, idx)
    assert {(q, n): SIMS[q, list(IDX[q]).index(n)] for q, n, _ in expected} == pytest.approx(
        {(q, n): strengths[q, n] for q, n, _ in expected})
    m = to_matrix(idx, static_accept(SIMS, idx, 0.0))
    assert sorted(zip(*m.nonzero())) == sorted(
        {(q, n) for q, n, _ in expected} | {(q, q) for q in range(len(idx))})


def test_matrix_forms_union_components_and_f1():
    a = to_matrix(IDX, static_accept(SIMS, IDX, 0.85))  # 0-1, 1-0
    b = to_matrix(IDX, static_accept(SIMS, IDX, 0.75) & (IDX == 2))  # 3-2
    both = union(a, b)
    assert both.diagonal().all()
    sets = matrix_to_sets(both, ["a", "b", "c", "d"])
    assert sets["a"] == {"a", "b"} and sets["d"] == {"d", "c"} and sets["c"] == {"c"}
    # F1: a, b perfect; c predicted {c} vs {c, d} -> 2/3; d perfect
    np.testing.assert_allclose(matrix_row_f1(both, LABELS), [1, 1, 2 / 3, 1], rtol=1e-12)
    chain = to_matrix(np.array([[0, 1], [1, 2], [2, 2]]), np.array([[False, True],
                                                                  [False, True],
                                                                  [False, False]]))
    closed = connected_components(chain)
    assert closed.toarray().all()


def test_capped_components_cut_chains_at_their_weakest_edges():
    # 0-1-2-3-4 chain; the 2-3 link is the weakest; cap 3 keeps {0,1,2} and {3,4}
    i, j = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    scores = np.array([0.9, 0.8, 0.1, 0.95])
    clusters, dropped = capped_components(i, j, scores, 6, max_size=3)
    assert dropped == 1
    assert len({*clusters[[0, 1, 2]]}) == 1 and clusters[3] == clusters[4] != clusters[0]
    assert clusters[5] not in clusters[:5]  # a lone row is its own cluster
    uncapped, none = capped_components(i, j, scores, 6, max_size=100)
    assert none == 0 and len(set(uncapped[:5])) == 1


def reference_capped_components(i, j, scores, n, max_size):
    """The plain union-find over every edge, strongest first (the naive reference)."""
    parent, size = list(range(n)), [1] * n

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for e in np.argsort(-np.asarray(scores), kind="stable"):
        ra, rb = root(int(i[e])), root(int(j[e]))
        if ra != rb and size[ra] + size[rb] <= max_size:
            parent[rb], size[ra] = ra, size[ra] + size[rb]
    return np.array([root(x) for x in range(n)])


@pytest.mark.parametrize("seed", range(5))
def test_capped_components_equal_a_plain_union_find(seed):
    rng = np.random.default_rng(seed)
    n, edges = 300, 500
    i, j = rng.integers(0, n, edges), rng.integers(0, n, edges)
    scores = rng.random(edges).round(2)  # ties too
    got, dropped = capped_components(i, j, scores, n, max_size=12)
    want = reference_capped_components(i, j, scores, n, 12)
    same = lambda c: c[:, None] == c[None, :]  # noqa: E731  co-membership
    np.testing.assert_array_equal(same(got), same(want))
    assert np.bincount(got).max() <= 12 and dropped > 0
    assert got[0] == 0 and sorted(set(got)) == list(range(got.max() + 1))


def test_a_20000_listing_chain_is_cut_in_bounded_memory():
    """Each listing matches the next: one component of 20,000. Closing it would hold 4e8
    pairs (> 2 GB); labelled and capped, the closure holds at most n * MAX_COMPONENT."""
    import tracemalloc

    from shopee_match.match.components import MAX_COMPONENT, component_labels

    n = 20_000
    chain = sparse.csr_matrix((np.ones(n - 1, bool), (np.arange(n - 1), np.arange(1, n))),
                              shape=(n, n))
    strength = sparse.csr_matrix((np.random.default_rng(0).random(n - 1),
                                  (np.arange(n - 1), np.arange(1, n))), shape=(n, n))
    tracemalloc.start()
    closed = connected_components(chain, strength)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert closed.nnz <= n * MAX_COMPONENT and peak < 200 * 2**20
    labels, dropped = component_labels(chain, strength)
    assert np.bincount(labels).max() <= MAX_COMPONENT and dropped == labels.max()
    np.testing.assert_array_equal(closed.sum(axis=1).A1, np.bincount(labels)[labels])


def test_matrix_f1_agrees_with_neighbor_f1_and_set_f1():
    rng = np.random.default_rng(3)
    n = 200
    labels = rng.integers(0, 60, size=n)
    idx = np.stack([np.concatenate([[r], rng.permutation(np.delete(np.arange(n), r))[:9]])
                    for r in range(n)])
    accepted = rng.random(idx.shape) < 0.3
    accepted[:, 0] = False
    m = to_matrix(idx, accepted)
    np.testing.assert_allclose(matrix_row_f1(m, labels), neighbor_row_f1(idx, accepted, labels),
                               rtol=1e-12)
    ids = [f"p{i}" for i in range(n)]
    truth = {ids[i]: {ids[j] for j in np.flatnonzero(labels == labels[i])} for i in range(n)}
    assert matrix_row_f1(m, labels).mean() == pytest.approx(
        row_f1(matrix_to_sets(m, ids), truth), rel=1e-12)


def test_blend_is_weighted_neighbour_mean():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    sims = np.array([[1.0, 0.5], [1.0, 0.5], [1.0, 0.5]], dtype=np.float32)
    idx = np.array([[0, 1], [1, 0], [2, -1]])
    out = blend(v, sims, idx, top_n=2)
    np.testing.assert_allclose(out[0], np.array([1.0, 0.5]) / np.sqrt(1.25), rtol=1e-6)
    np.testing.assert_allclose(out[2], [1.0, 0.0], rtol=1e-6)  # padding ignored


def test_sweep_matches_direct_f1():
    table = sweep(SIMS, IDX, LABELS, [0.25, 0.85], "static")
    direct = neighbor_row_f1(IDX, static_accept(SIMS, IDX, 0.85), LABELS).mean()
    assert table.loc[1, "f1"] == pytest.approx(direct, rel=1e-12)
    assert table.loc[0, "mean_matches"] > table.loc[1, "mean_matches"]


def naive_sweep(sims, idx, labels, values, strategy):
    """Today's reference: a fresh acceptance mask and row F1 for every value."""
    accept = STRATEGIES[strategy]
    return np.array([[neighbor_row_f1(idx, accept(sims, idx, v), labels).mean(),
                      1 + accept(sims, idx, v).sum(axis=1).mean()] for v in values])


@pytest.mark.parametrize("strategy,values", [
    ("static", np.linspace(0.0, 1.0, 41)),
    ("dynamic", np.linspace(-1.0, 3.0, 33)),
    ("quantile", np.linspace(0.0, 1.0, 21)),
])
@pytest.mark.parametrize("seed,chunk_rows", [(0, 4096), (1, 64), (2, 7)])
def test_sorted_sweep_equals_a_mask_per_value(strategy, values, seed, chunk_rows, monkeypatch):
    monkeypatch.setattr(thresholds, "SWEEP_CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(seed)
    n, k = 400, 12
    labels = rng.integers(0, 60, size=n)
    idx = np.stack([rng.permutation(n)[:k] for _ in range(n)])
    idx[:, 0] = np.arange(n)  # self first, as a self-search returns it
    idx[rng.random((n, k)) < 0.1] = -1  # padding anywhere
    # coarse similarities: many ties, some exactly on a threshold; unsorted rows
    sims = (rng.integers(0, 21, size=(n, k)) / 20).astype(np.float32)
    table = sweep(sims, idx, labels, values, strategy)
    reference = naive_sweep(sims, idx, labels, values, strategy)
    np.testing.assert_allclose(table["f1"], reference[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["mean_matches"], reference[:, 1], rtol=0, atol=1e-12)
    assert table["value"].tolist() == values.tolist()


def test_static_threshold_compares_in_float64():
    sims = np.array([[1.0, 0.7]], dtype=np.float32)  # float32(0.7) > 0.7
    idx = np.array([[0, 1]])
    assert static_accept(sims, idx, 0.7)[0, 1] == static_accept(sims, idx, np.float64(0.7))[0, 1]


def test_pair_classifier_learns_from_features(monkeypatch):
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 100, size=n)
    centres = rng.normal(size=(100, 16))
    x = centres[labels] + 0.4 * rng.normal(size=(n, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    from shopee_match.match.neighbors import exact_knn

    sims, idx = exact_knn(x, k=10)
    i, j, rank = candidate_pairs(idx)
    assert (i != j).all() and rank.min() == 1
    feats = pair_features(i, j, rank, {"image": x}, sims, idx, phash=["h"] * n)
    assert list(feats.columns) == ["sim_image", "rank", "query_sim_mean", "query_sim_std",
                                   "same_phash"]
    y = labels[i] == labels[j]
    model = PairClassifier.fit(feats, y)
    proba = model.model.predict_proba(feats)[:, 1]
    assert proba[y].mean() > proba[~y].mean() + 0.3
    for chunk in (7, len(feats), 10**6):  # scored in chunks: the same probabilities
        monkeypatch.setattr(second_stage, "SCORE_CHUNK", chunk)
        np.testing.assert_allclose(model.probabilities(feats), proba, rtol=1e-12)
    keep = proba > 0.5
    m = pairs_to_matrix(i[keep], j[keep], n)
    assert matrix_row_f1(m, labels).mean() > matrix_row_f1(pairs_to_matrix(
        i[:0], j[:0], n), labels).mean()


def test_predict_matches_applies_each_step():
    from shopee_match.match.config import MatchConfig, SecondStage

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(40), 3)
    centres = rng.normal(size=(40, 8))
    image = centres[labels] + 0.3 * rng.normal(size=(120, 8))
    text = centres[labels] + 0.3 * rng.normal(size=(120, 8))
    vectors = Gallery({name: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
                       for name, v in {"image": image, "text": text}.items()})
    base = MatchConfig(encoders={"image": "timm:x:none", "text": "sbert:y"},
                       fusion_weights={"image": 1.0, "text": 1.0}, k=10, value=0.8)
    f1 = matrix_row_f1(predict_matches(vectors, base), labels).mean()
    assert f1 > 0.8
    everything = predict_matches(vectors, base.replace(value=1.0))  # nothing passes
    assert everything.nnz == 120
    lonely_fixed = predict_matches(vectors, base.replace(value=1.0, min2=-1.0))
    assert lonely_fixed.nnz == 240
    with_union = predict_matches(vectors, base.replace(value=1.0, union={"image": -1.0}))
    assert with_union.nnz == 120 * 11
    blended = predict_matches(vectors, base.replace(blend_rounds=1, blend_top_n=3))
    assert matrix_row_f1(blended, labels).mean() > 0.5
    closed = predict_matches(vectors, base.replace(value=-1.0, k=2, components=True))
    assert closed.nnz > predict_matches(vectors, base.replace(value=-1.0, k=2)).nnz
    staged = base.replace(second_stage=SecondStage("pair_classifier", 0.5, "m.joblib"))
    with pytest.raises(ValueError, match="needs its fitted pair_classifier"):
        predict_matches(vectors, staged)
    pairs = candidate_pair_features(vectors, staged)
    model = PairClassifier.fit(pairs.features, labels[pairs.i] == labels[pairs.j])
    assert matrix_row_f1(predict_matches(vectors, staged, model), labels).mean() > 0.8
    one = predict_matches(vectors.take(np.arange(1)), staged, model)
    assert one.toarray().tolist() == [[True]]  # one listing (a 1-row test set): itself only


def test_predict_matches_cache_gives_the_same_result():
    from shopee_match.match.config import MatchConfig

    rng = np.random.default_rng(2)
    v = rng.normal(size=(60, 6)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    vectors = {"image": v, "text": v[::-1].copy()}
    gallery = Gallery(vectors)
    for value in (0.2, 0.5):
        config = MatchConfig(encoders={"image": "a", "text": "b"}, fusion_weights={"image": 1.0},
                             k=8, value=value, union={"text": 0.6}, blend_rounds=1)
        cached = predict_matches(gallery, config)
        fresh = predict_matches(Gallery(vectors), config)
        assert (cached != fresh).nnz == 0
    assert len(gallery.cache) == 2  # one fused list and one text list, reused across values


def test_pair_training_data_labels_candidate_pairs_by_group():
    from shopee_match.match.config import MatchConfig
    from shopee_match.match.decision import pair_training_data

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 2)
    v = rng.normal(size=(20, 4)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    config = MatchConfig(encoders={"image": "a"}, fusion_weights={"image": 1.0}, k=3, value=0.5)
    features, is_match = pair_training_data(Gallery({"image": v}), labels, config)
    assert len(features) == len(is_match) == 20 * 3  # k others per listing
    assert set(features.columns) == {"sim_image", "rank", "query_sim_mean", "query_sim_std"}
    assert ((features["rank"].to_numpy() - 1) == np.tile(np.arange(3), 20)).all()
    sims = v @ v.T  # naive reference: is each listing's partner among its 3 nearest others?
    np.fill_diagonal(sims, -np.inf)
    top3 = np.argsort(-sims, axis=1)[:, :3]
    expected = (labels[top3] == labels[:, None]).ravel()
    assert np.array_equal(is_match, expected)
    assert np.allclose(features["sim_image"], np.take_along_axis(sims, top3, 1).ravel(),
                       atol=1e-6)


def test_a_threshold_sweep_scores_each_candidate_pair_once():
    from shopee_match.match.config import MatchConfig, SecondStage

    class CountingModel:
        calls = 0

        def predict_proba(self, x):
            CountingModel.calls += 1
            p = x[:, 0]  # sim_image
            return np.stack([1 - p, p], axis=1)

    rng = np.random.default_rng(4)
    v = rng.normal(size=(30, 5)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    base = MatchConfig(encoders={"image": "a"}, fusion_weights={"image": 1.0}, k=5, value=0.5)
    model, gallery = PairClassifier(CountingModel()), Gallery({"image": v})
    sizes = [predict_matches(gallery, base.replace(
        second_stage=SecondStage("pair_classifier", t, "m.joblib")), model).nnz
             for t in (0.0, 0.5, 0.9, 1.0)]
    assert CountingModel.calls == 1
    assert sizes[0] == 30 * 6 and sizes[-1] == 30 and sizes == sorted(sizes, reverse=True)
