"""Exact kNN against brute force; FAISS indexes; fusion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from shopee_match.match.neighbors import (
    INDEX_KINDS,
    ann_knn,
    build_index,
    exact_knn,
    find_neighbors,
    fuse,
    neighbor_recall,
    pair_cosine,
    search_index,
)


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(q, g, k, exclude_self=False):
    s = q @ g.T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    idx = np.stack([np.lexsort((np.arange(len(row)), -row))[:k] for row in s])
    return np.take_along_axis(s, idx, axis=1), idx


@pytest.mark.parametrize("exclude_self", [False, True])
def test_exact_knn_equals_brute_force(exclude_self):
    x = unit_rows(300, 24)
    sims, idx = exact_knn(x, k=10, exclude_self=exclude_self)
    ref_s, ref_i = brute_force(x, x, 10, exclude_self)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sims, ref_s, rtol=1e-5, atol=1e-6)
    if not exclude_self:
        assert (idx[:, 0] == np.arange(300)).all()
    else:
        assert not (idx == np.arange(300)[:, None]).any()


def test_result_does_not_depend_on_chunk_size():
    x = unit_rows(257, 16, seed=1)
    ref = exact_knn(x, k=7)
    for chunk in (1, 10, 64, 1000):
        s, i = exact_knn(x, k=7, chunk_rows=chunk)
        np.testing.assert_array_equal(i, ref[1])
        np.testing.assert_allclose(s, ref[0], rtol=1e-6)


def test_ties_are_ordered_by_index():
    base = unit_rows(5, 8, seed=2)
    x = np.concatenate([base, base, base])  # rows i, i+5, i+10 identical
    _, idx = exact_knn(x, k=3)
    for i in range(5):
        assert idx[i].tolist() == [i, i + 5, i + 10]


def test_queries_against_gallery_and_sparse_input():
    g = unit_rows(120, 12, seed=3)
    q = unit_rows(30, 12, seed=4)
    s, i = exact_knn(q, g, k=5)
    ref_s, ref_i = brute_force(q, g, 5)
    np.testing.assert_array_equal(i, ref_i)
    ss, si = exact_knn(sparse.csr_matrix(q), sparse.csr_matrix(g), k=5)
    np.testing.assert_array_equal(si, ref_i)
    np.testing.assert_allclose(ss, s, rtol=1e-5)
    with pytest.raises(ValueError, match="exclude_self"):
        exact_knn(q, g, k=5, exclude_self=True)


def test_k_is_clamped_to_gallery():
    s, i = exact_knn(unit_rows(4, 3), k=50, exclude_self=True)
    assert i.shape == (4, 3)


def test_flat_index_equals_exact_and_ann_recall_is_high():
    x = unit_rows(2000, 32, seed=5)
    _, exact = exact_knn(x, k=10)
    _, flat = search_index(build_index(x, "flat"), x, 10)
    assert neighbor_recall(flat, exact) == 1.0
    _, hnsw, times = ann_knn(x, k=10, kind="hnsw")
    assert neighbor_recall(hnsw, exact) > 0.9 and times["build_s"] >= 0
    for kind in INDEX_KINDS:
        _, idx, _ = ann_knn(x, k=10, kind=kind)
        assert idx.shape == (2000, 10)
    with pytest.raises(ValueError, match="Unknown index kind"):
        build_index(x, "lsh")


def test_neighbor_recall_hand_computed():
    exact = np.array([[0, 1, 2], [1, 2, 3]])
    approx = np.array([[0, 2, 9], [3, -1, -1]])
    assert neighbor_recall(approx, exact) == pytest.approx((2 / 3 + 1 / 3) / 2, rel=1e-12)


def test_fused_similarity_is_weighted_mean_of_cosines():
    a, b = unit_rows(50, 8, seed=6), unit_rows(50, 5, seed=7)
    f = fuse({"image": a, "text": b}, {"image": 1.0, "text": 3.0})
    expected = (1.0 * (a @ a.T) + 3.0 * (b @ b.T)) / 4.0
    np.testing.assert_allclose(f @ f.T, expected, atol=1e-5)
    # a row missing one modality is renormalised onto the other
    a[0] = 0
    f = fuse({"image": a, "text": b})
    np.testing.assert_allclose(f[0] @ f[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(f[0] @ f[1], (b[0] @ b[1]) / np.sqrt(2), atol=1e-5)
    with pytest.raises(ValueError, match="unknown modalities"):
        fuse({"image": a}, {"text": 1.0})


def test_pair_cosine_dense_and_sparse():
    x = unit_rows(20, 6, seed=8)
    i, j = np.array([0, 3, 5]), np.array([1, 3, 19])
    expected = [x[a] @ x[b] for a, b in zip(i, j)]
    np.testing.assert_allclose(pair_cosine(x, i, j), expected, rtol=1e-5)
    np.testing.assert_allclose(pair_cosine(sparse.csr_matrix(x), i, j), expected, rtol=1e-5)


def test_pair_cosine_in_chunks_equals_all_at_once(monkeypatch):
    from shopee_match.match import neighbors

    x = unit_rows(50, 8, seed=9)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 50, 1001), rng.integers(0, 50, 1001)
    whole = np.einsum("nd,nd->n", x[i], x[j])
    monkeypatch.setattr(neighbors, "PAIR_CHUNK", 64)  # 16 chunks, the last one partial
    np.testing.assert_allclose(pair_cosine(x, i, j), whole, rtol=1e-6)
    np.testing.assert_allclose(pair_cosine(sparse.csr_matrix(x), i, j), whole, rtol=1e-5)
    assert pair_cosine(x, i[:0], j[:0]).shape == (0,)


def test_find_neighbors_dispatches_to_exact_and_faiss():
    x = unit_rows(400, 16, seed=9)
    s_exact, i_exact = find_neighbors(x, k=5)
    s_flat, i_flat = find_neighbors(x, k=5, method="flat")
    np.testing.assert_array_equal(i_exact, i_flat)
    np.testing.assert_allclose(s_exact, s_flat, rtol=1e-5)
    _, i_hnsw = find_neighbors(x, k=5, method="hnsw", M=16)
    assert neighbor_recall(i_hnsw, i_exact) > 0.9
    with pytest.raises(ValueError, match="Unknown method"):
        find_neighbors(x, method="annoy")


def clustered_rows(n=3000, groups=60, dim=16, noise=0.05, seed=4):
    rng = np.random.default_rng(seed)
    centres = unit_rows(groups, dim, seed=seed + 1)
    x = centres[rng.integers(0, groups, n)] + noise * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_self_knn_goes_approximate_above_the_threshold_and_reaches_the_recall(caplog):
    from shopee_match.match.ivf import self_knn

    x = clustered_rows(noise=0.3)
    caplog.set_level("INFO", logger="shopee_match")
    exact = self_knn(x, k=10)
    assert caplog.text == ""  # exact below the threshold: nothing to report
    for target in (0.9, 0.99):
        caplog.clear()
        sims, idx = self_knn(x, k=10, exact_max_rows=1000, recall=target)
        report = caplog.text
        assert "rows searched by IVF (grouped scan)" in report and f">= {target}" in report
        sampled = float(report.split("; recall ")[1].split()[0])
        assert sampled >= target - 0.01  # planned on the sample, reached on it
        assert neighbor_recall(idx, exact[1]) >= target - 0.02  # and on every row
        assert (idx[:, 0] == np.arange(3000)).mean() > 0.95  # itself first
        assert (np.diff(sims, axis=1) <= 1e-6).all()  # nearest first
    probes = [int(r.getMessage().split(" lists, ")[1].split()[0]) for r in caplog.records
              if "IVF" in r.getMessage()]
    assert probes and probes[-1] >= 1


def test_the_sampled_exact_lists_equal_exact_search():
    from shopee_match.match.ivf import sample_knn

    x = clustered_rows(n=700, noise=0.3)
    sample = np.array([3, 699, 0, 250])
    want = exact_knn(x[sample], x, k=9)[1]
    np.testing.assert_array_equal(sample_knn(x, sample, 9, block=3), want)
    np.testing.assert_array_equal(sample_knn(x, sample, 9), want)  # one block


def test_a_target_out_of_reach_of_a_bounded_scan_is_capped_and_warned(monkeypatch, caplog):
    """Noise vectors: their exact neighbours lie in every list, so recall 0.99 would need an
    almost exhaustive scan; the probes stop at the scan cap and the log says so."""
    from shopee_match.match import ivf

    x = unit_rows(3000, 16, seed=12)
    monkeypatch.setattr(ivf, "MAX_SCAN_ROWS", 300)  # ~10% of the rows a query
    caplog.set_level("INFO", logger="shopee_match")
    _, idx = ivf.self_knn(x, k=10, exact_max_rows=1000, recall=0.99)
    [record] = [r for r in caplog.records if "IVF" in r.getMessage()]
    assert record.levelname == "WARNING" and "capped" in record.getMessage()
    _, _, plan = ivf.ivf_knn(x, 10, 0.99)
    assert plan.capped and plan.nprobe == 300 * plan.nlist // 3000
    assert plan.recall < 0.99 and plan.planned_recall < 0.99
    _, _, free = ivf.ivf_knn(x, 10, 0.5)  # a target within reach is not capped
    assert not free.capped and free.planned_recall >= 0.5


def test_the_grouped_scan_finds_what_probing_each_querys_lists_finds():
    """The IVF search against a naive reference: for every query, brute force over the rows
    of the lists of its nprobe nearest centroids (k = 40: longer than most lists, so lists
    are filled from several, and with one probe padded)."""
    from shopee_match.match.ivf import coarse_lists, grouped_search

    x = clustered_rows(n=600, groups=20, noise=0.4, seed=11)
    centroids, lists = coarse_lists(x, 16)
    assert (np.bincount(lists) < 40).any()
    for k, nprobe in [(7, 1), (7, 3), (7, 16), (40, 1), (40, 3)]:
        sims, idx = grouped_search(x, centroids, lists, k, nprobe)
        probed = np.argsort(-(x @ centroids.T), axis=1, kind="stable")[:, :nprobe]
        for q in range(0, 600, 37):
            rows = np.flatnonzero(np.isin(lists, probed[q]))
            scores = x[rows] @ x[q]
            want = rows[np.lexsort((rows, -scores))][:k]
            got = idx[q][idx[q] >= 0]
            assert got.tolist() == want.tolist(), (k, nprobe, q)
            np.testing.assert_allclose(sims[q][:len(got)], np.sort(scores)[::-1][:len(got)],
                                       rtol=1e-5, atol=1e-6)
        unpruned = grouped_search(x, centroids, lists, k, nprobe, prune=False)
        np.testing.assert_array_equal(unpruned[1], idx)  # pruning changes no list
    sims, idx = grouped_search(x, centroids, lists, 7, 16)  # every list: exact search
    np.testing.assert_array_equal(idx, exact_knn(x, k=7)[1])


def test_probes_are_planned_from_where_the_exact_neighbours_lie():
    """By hand: two lists; a query whose neighbours lie half in its own list and half in the
    other needs 2 probes for recall 1, and 1 probe gives 0.5."""
    from shopee_match.match.ivf import plan_probes

    centroids = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    lists = np.array([0, 0, 1, 1])
    query = np.array([[0.9, 0.1]], np.float32)
    exact = np.array([[0, 2, 1, 3]])
    assert plan_probes(query, exact, centroids, lists, 0.5) == (1, 0.5)
    assert plan_probes(query, exact, centroids, lists, 0.9) == (2, 1.0)
    assert plan_probes(query, exact, centroids, lists, 0.9, most=1) == (1, 0.5)  # capped
    assert plan_probes(query, np.array([[-1, -1]]), centroids, lists, 0.9) == (1, 1.0)


def test_neighbor_lists_hold_int32_indices_while_they_fit():
    from shopee_match.match.ivf import ivf_knn
    from shopee_match.match.neighbors import index_dtype

    assert index_dtype(2**31 - 1) == np.int32 and index_dtype(2**31) == np.int64
    x = unit_rows(400, 12, seed=6)
    ref_s, ref_i = brute_force(x, x, 8)
    searches = {"exact": exact_knn(x, k=8), "sparse": exact_knn(sparse.csr_matrix(x), k=8),
                "flat index": search_index(build_index(x, "flat"), x, 8),
                "IVF": ivf_knn(x, 8, nlist=20, nprobe=20)[:2]}  # every list probed: exact
    for name, (sims, idx) in searches.items():
        assert idx.dtype == np.int32 and sims.dtype == np.float32, name
        np.testing.assert_array_equal(idx, ref_i, err_msg=name)  # same rows as int64 lists
    _, padded = search_index(build_index(x[:5], "flat"), x[:2], 8)  # padding stays -1
    assert padded.dtype == np.int32 and (padded[:, 5:] == -1).all()


def test_fuse_in_blocks_equals_the_whole_at_once(monkeypatch):
    from shopee_match.match import neighbors

    image, text = unit_rows(50, 12, seed=7), unit_rows(50, 5, seed=8)
    text[3] = 0  # a listing without a title
    weights = {"image": 0.7, "text": 0.3}
    whole = np.concatenate([np.sqrt(0.7) * image, np.sqrt(0.3) * text], axis=1)
    reference = (whole / np.maximum(np.linalg.norm(whole, axis=1, keepdims=True), 1e-12)
                 ).astype(np.float32)
    for chunk in (1, 7, 10**6):
        monkeypatch.setattr(neighbors, "FUSE_CHUNK", chunk)
        fused = fuse({"image": image, "text": text}, weights)
        assert fused.dtype == np.float32
        np.testing.assert_array_equal(fused, reference)


def test_one_sources_rows_are_searched_among_the_others_by_the_same_grouped_scan():
    """Queries against another gallery (one shop's listings among the other's): against a
    naive reference (brute force over the lists of each query's nprobe nearest centroids),
    and every list probed is exact search."""
    from shopee_match.match.ivf import coarse_lists, grouped_search, ivf_search

    x = clustered_rows(n=900, groups=30, noise=0.4, seed=5)
    queries, gallery = x[::3], np.delete(x, np.arange(0, 900, 3), axis=0)
    centroids, lists = coarse_lists(gallery, 16)
    for nprobe in (1, 3):
        sims, idx = grouped_search(gallery, centroids, lists, 7, nprobe, query_vectors=queries)
        probed = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")[:, :nprobe]
        for q in range(0, len(queries), 29):
            rows = np.flatnonzero(np.isin(lists, probed[q]))
            scores = gallery[rows] @ queries[q]
            assert idx[q][idx[q] >= 0].tolist() == rows[np.lexsort((rows, -scores))][:7].tolist()
    exact = exact_knn(queries, gallery, k=7)
    np.testing.assert_array_equal(ivf_search(queries, gallery, 7, nlist=16, nprobe=16)[1],
                                  exact[1])
    sims, idx, plan = ivf_search(queries, gallery, 7, recall=0.99)
    assert plan.planned_recall >= 0.99 and plan.recall >= 0.99 and plan.rows == len(gallery)
    assert neighbor_recall(idx, exact[1]) >= 0.98 and plan.nprobe < plan.nlist


def test_cross_source_lists_go_approximate_above_the_threshold(caplog):
    """Two sources: above exact_max_rows rows of the others each source is searched by the
    IVF search; lists keep each row first and then the other source's rows only, and find
    the exact lists' neighbours."""
    from shopee_match.match.sources import exact_lists, source_lists

    x = clustered_rows(n=2000, groups=100, noise=0.3, seed=8)
    sources = np.random.default_rng(1).integers(0, 2, len(x)).astype(np.int32)
    exact = exact_lists(x, None, 8, sources)
    caplog.set_level("INFO", logger="shopee_match")
    assert np.array_equal(source_lists(x, sources, 8)[1], exact[1])  # below: exact
    assert "IVF" not in caplog.text
    sims, idx = source_lists(x, sources, 8, recall=0.99, exact_max_rows=500)
    assert caplog.text.count("queries against another gallery") == 2
    assert (idx[:, 0] == np.arange(len(x))).all()
    found = idx[:, 1:]
    assert (sources[found[found >= 0]] != np.repeat(sources, 7)[found.ravel() >= 0]).all()
    assert neighbor_recall(idx[:, 1:], exact[1][:, 1:]) >= 0.97
    assert (np.diff(sims[:, 1:], axis=1) <= 1e-6).all()
