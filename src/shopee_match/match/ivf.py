"""Self-search that scales: exact up to a size, above it an inverted-file (IVF) search that
probes as few lists as a recall target allows, scanned as matrix products.

Every row is put in the list of its nearest k-means centroid. A query scans the lists of its
``nprobe`` nearest centroids, so it finds an exact neighbour exactly when that neighbour's
list is among them: the recall an ``nprobe`` gives is measured on a sample of the data's own
rows against exact search (:func:`plan_probes`), and the smallest ``nprobe`` that reaches
the target is used. The scan is grouped by list (:func:`grouped_search`): the rows of a list
against every query that probes it is one matrix product, which runs near the CPU's
arithmetic limit, where scanning list by list for each query (FAISS's IVF-Flat) does not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from shopee_match.match.neighbors import exact_knn, index_dtype, neighbor_recall, order_ties

logger = logging.getLogger(__name__)

#: galleries up to this many rows are searched exactly; larger ones through the IVF search
EXACT_MAX_ROWS = 200_000
#: the share of exact top-k neighbours the IVF search must find (on a sample) by default
RECALL_TARGET = 0.99
#: rows whose exact lists choose the probe count and check the recall reached
RECALL_SAMPLE = 1000
#: queries per matrix product in the grouped scan (bounds its working memory)
QUERY_BLOCK = 8192


@dataclass
class IvfPlan:
    """How a gallery was searched: lists, probes, the recall measured on a sample of its rows
    (planned before the search and reached after it), and the seconds each step took."""

    rows: int
    nlist: int
    nprobe: int
    target: float
    planned_recall: float
    recall: float
    sample: int
    seconds: dict

    def __str__(self) -> str:
        steps = ", ".join(f"{name} {s:.0f} s" for name, s in self.seconds.items())
        return (f"{self.rows} rows searched by IVF (grouped scan): {self.nlist} lists, "
                f"{self.nprobe} probed for recall >= {self.target} of exact; recall "
                f"{self.recall:.4f} on {self.sample} sampled rows ({steps})")


def self_knn(vectors, k: int = 50, exact_max_rows: int = EXACT_MAX_ROWS,
             recall: float = RECALL_TARGET, progress: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """Self-search lists ``(sims, idx)`` of ``k`` columns: :func:`exact_knn` up to
    ``exact_max_rows`` rows (and for sparse vectors); above that the recall-targeted IVF
    search (:func:`ivf_knn`), whose plan is logged."""
    from scipy import sparse

    n = vectors.shape[0]
    if sparse.issparse(vectors) or n <= exact_max_rows:
        return exact_knn(vectors, k=k, progress=progress)
    sims, idx, plan = ivf_knn(vectors, k, recall, progress=progress)
    logger.info("%s", plan)
    return sims, idx


def ivf_knn(vectors: np.ndarray, k: int, recall: float = RECALL_TARGET,
            nlist: int | None = None, nprobe: int | None = None, progress: bool = False
            ) -> tuple[np.ndarray, np.ndarray, IvfPlan]:
    """``(sims, idx, plan)``: every row's ``k`` nearest rows by an IVF search with ``nlist``
    lists (default ~4 sqrt(n)) probing ``nprobe`` of them (default: the fewest whose recall on
    a sample reaches ``recall``), ordered as :func:`exact_knn` orders them."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    k = min(k, n)
    seconds = {}
    start = time.perf_counter()
    centroids, lists = coarse_lists(x, nlist or max(1, int(4 * np.sqrt(n))))
    seconds["k-means"] = time.perf_counter() - start
    sample = np.random.default_rng(0).choice(n, min(RECALL_SAMPLE, n), replace=False)
    start = time.perf_counter()
    _, exact = exact_knn(x[sample], x, k=k)
    planned, planned_recall = plan_probes(x[sample], exact, centroids, lists, recall)
    nprobe = nprobe or planned
    seconds["plan"] = time.perf_counter() - start
    start = time.perf_counter()
    sims, idx = grouped_search(x, centroids, lists, k, nprobe, progress)
    seconds["search"] = time.perf_counter() - start
    reached = neighbor_recall(idx[sample], exact)
    plan = IvfPlan(n, len(centroids), nprobe, recall, planned_recall, reached, len(sample),
                   seconds)
    return sims, idx, plan


def coarse_lists(x: np.ndarray, nlist: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids, lists)``: spherical k-means centroids (trained on at most 64 rows a
    list) and the list of every row (its nearest centroid)."""
    import faiss

    n, d = x.shape
    nlist = max(1, min(nlist, n))
    train = (x[np.random.default_rng(seed).choice(n, 64 * nlist, replace=False)]
             if n > 64 * nlist else x)
    kmeans = faiss.Kmeans(d, nlist, niter=20, seed=seed, spherical=True, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=64)
    kmeans.train(train)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    _, lists = _nearest_centroids(x, centroids, 1)
    return centroids, lists[:, 0]


def plan_probes(queries: np.ndarray, exact: np.ndarray, centroids: np.ndarray,
                lists: np.ndarray, target: float) -> tuple[int, float]:
    """The fewest lists to probe for the sampled ``queries`` to find at least ``target`` of
    their ``exact`` neighbours, and the recall that gives: a query finds a neighbour exactly
    when the neighbour's list is among the query's nearest centroids, so the recall of every
    ``nprobe`` follows from each neighbour's list's rank among its query's centroids."""
    order = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
    valid = exact >= 0
    needed = np.take_along_axis(rank, lists[np.where(valid, exact, 0)], axis=1)
    needed = needed[valid]  # probes each neighbour needs, less one
    if needed.size == 0:
        return 1, 1.0
    counts = np.bincount(needed, minlength=len(centroids))
    found = np.cumsum(counts) / needed.size  # recall with nprobe = 1, 2, ...
    nprobe = int(np.searchsorted(found, target - 1e-12) + 1)
    nprobe = min(nprobe, len(centroids))
    return nprobe, float(found[nprobe - 1])


def grouped_search(x: np.ndarray, centroids: np.ndarray, lists: np.ndarray, k: int,
                   nprobe: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` nearest rows among the lists of its ``nprobe`` nearest centroids,
    list by list: the rows of a list against all the queries that probe it is one matrix
    product, merged into each query's running top ``k`` (``-1`` pads what is not filled)."""
    import torch

    from shopee_match.progress import progress_bar

    n = len(x)
    _, probes = _nearest_centroids(x, centroids, nprobe)
    by_list = np.argsort(probes.ravel(), kind="stable")  # (query, probe) slots, grouped by list
    probe_bounds = np.searchsorted(probes.ravel()[by_list], np.arange(len(centroids) + 1))
    members = np.argsort(lists, kind="stable")
    member_bounds = np.searchsorted(lists[members], np.arange(len(centroids) + 1))
    data = torch.from_numpy(x)
    best_s = torch.full((n, k), -np.inf, dtype=torch.float32)
    best_i = torch.full((n, k), -1, dtype=torch.int64)
    for c in progress_bar(range(len(centroids)), desc="IVF grouped scan", disable=not progress,
                          leave=False):
        rows = torch.from_numpy(members[member_bounds[c]:member_bounds[c + 1]])
        queries = by_list[probe_bounds[c]:probe_bounds[c + 1]] // nprobe
        if not len(rows) or not len(queries):
            continue
        block = data[rows].T.contiguous()
        for lo in range(0, len(queries), QUERY_BLOCK):
            q = torch.from_numpy(queries[lo:lo + QUERY_BLOCK])
            scores = data[q] @ block
            top_s, top_j = torch.topk(scores, min(k, len(rows)), dim=1)
            merged_s = torch.cat([best_s[q], top_s], dim=1)
            merged_i = torch.cat([best_i[q], rows[top_j]], dim=1)
            keep_s, keep = torch.topk(merged_s, k, dim=1)
            best_s[q], best_i[q] = keep_s, torch.gather(merged_i, 1, keep)
    sims = best_s.numpy()
    idx = best_i.numpy().astype(index_dtype(n))
    idx[~np.isfinite(sims)] = -1
    order_ties(sims, idx)
    return sims, idx


def _nearest_centroids(x: np.ndarray, centroids: np.ndarray, m: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``m`` nearest centroids (inner product), nearest first."""
    import faiss

    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    sims, found = quantizer.search(x, m)
    return sims, found.astype(np.int64)
