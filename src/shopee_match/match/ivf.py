"""Self-search that scales: exact up to a size, above it an inverted-file (IVF) search that
probes as few lists as a recall target allows, scanned as matrix products.

Every row is put in the list of its nearest k-means centroid. A query scans the lists of its
``nprobe`` nearest centroids, so it finds an exact neighbour exactly when that neighbour's
list is among them: the recall an ``nprobe`` gives is measured on a sample of the data's own
rows against exact search (:func:`plan_probes`), and the smallest ``nprobe`` that reaches
the target is used, up to a cap on the rows each query scans (:data:`MAX_SCAN_ROWS`): on
vectors whose neighbours beyond near-duplicates are noise, no list order helps and the
target would need an almost exhaustive scan; there the recall reached is logged as a
warning instead. The scan is grouped by list (:func:`grouped_search`): the rows of a list
against every query that probes it is one matrix product, which runs near the CPU's
arithmetic limit, where scanning list by list for each query (FAISS's IVF-Flat) does not.
"""

from __future__ import annotations

import logging
import time
import warnings
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
#: the most rows a query may scan (its probed lists, on average) in pursuit of the target:
#: what the search scanned before it had one, so a target out of reach costs no more
MAX_SCAN_ROWS = 16_384
#: k-means training rows per list and iterations (the lists only steer the probes; recall
#: is planned and measured on the lists as trained; on 1M title vectors 5 iterations need
#: the same 12 probes as 10 for recall 0.99, in half the training time)
KMEANS_ROWS_PER_LIST = 40
KMEANS_ITERATIONS = 5
#: scores per block of sampled queries in the exact search of the sample (1 GB of float32:
#: 250 queries a pass over 1M rows, 1.5x faster than 100 there; the pass is memory-bound)
SAMPLE_BLOCK_SCORES = 250_000_000
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
    capped: bool = False

    def __str__(self) -> str:
        steps = ", ".join(f"{name} {s:.0f} s" for name, s in self.seconds.items())
        capped = (f" (capped at ~{MAX_SCAN_ROWS} rows a query: the target is out of reach of "
                  "a bounded scan; such vectors' neighbours beyond near-duplicates are noise)"
                  if self.capped else "")
        return (f"{self.rows} rows searched by IVF (grouped scan): {self.nlist} lists, "
                f"{self.nprobe} probed for recall >= {self.target} of exact{capped}; recall "
                f"{self.recall:.4f} on {self.sample} sampled rows ({steps})")


def self_knn(vectors, k: int = 50, exact_max_rows: int = EXACT_MAX_ROWS,
             recall: float = RECALL_TARGET, progress: bool = False, exact=None, scan=None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Self-search lists ``(sims, idx)`` of ``k`` columns: :func:`exact_knn` up to
    ``exact_max_rows`` rows (and for sparse vectors); above that the recall-targeted IVF
    search (:func:`ivf_knn`), whose plan is logged. ``exact(vectors, k)`` and ``scan`` replace
    the exact search and the IVF scan (the Ray executor's run them on its workers)."""
    from scipy import sparse

    n = vectors.shape[0]
    if sparse.issparse(vectors) or n <= exact_max_rows:
        if exact is not None:
            return exact(vectors, k)
        return exact_knn(vectors, k=k, progress=progress)
    sims, idx, plan = ivf_knn(vectors, k, recall, progress=progress, scan=scan)
    _log_plan(plan)
    return sims, idx


def gallery_knn(queries, gallery, k: int, exact_max_rows: int = EXACT_MAX_ROWS,
                recall: float = RECALL_TARGET) -> tuple[np.ndarray, np.ndarray]:
    """Each ``queries`` row's ``k`` nearest ``gallery`` rows (one source's listings among the
    others'), chosen as :func:`self_knn` chooses: :func:`exact_knn` up to ``exact_max_rows``
    gallery rows (and for sparse vectors), above that :func:`ivf_search`, its plan logged."""
    from scipy import sparse

    if sparse.issparse(gallery) or gallery.shape[0] <= exact_max_rows:
        return exact_knn(queries, gallery, k)
    sims, idx, plan = ivf_search(queries, gallery, k, recall)
    _log_plan(plan, f"{len(queries)} queries against another gallery: ")
    return sims, idx


def _log_plan(plan: IvfPlan, prefix: str = "") -> None:
    """The plan as an INFO line, or a WARNING when its target was out of reach."""
    logger.log(logging.WARNING if plan.capped else logging.INFO, "%s%s", prefix, plan)


def ivf_knn(vectors: np.ndarray, k: int, recall: float = RECALL_TARGET,
            nlist: int | None = None, nprobe: int | None = None, progress: bool = False,
            scan=None) -> tuple[np.ndarray, np.ndarray, IvfPlan]:
    """``(sims, idx, plan)``: every row's ``k`` nearest rows by an IVF search with ``nlist``
    lists (default ~2 sqrt(n)) probing ``nprobe`` of them (default: the fewest whose recall on
    a sample reaches ``recall``, scanning at most ~:data:`MAX_SCAN_ROWS` rows a query),
    ordered as :func:`exact_knn` orders them. ``scan`` runs the scan itself (default
    :func:`grouped_search`; the Ray executor's scans blocks of queries on its workers)."""
    return ivf_search(vectors, None, k, recall, nlist, nprobe, progress, scan)


def ivf_search(queries: np.ndarray, gallery: np.ndarray | None, k: int,
               recall: float = RECALL_TARGET, nlist: int | None = None,
               nprobe: int | None = None, progress: bool = False, scan=None
               ) -> tuple[np.ndarray, np.ndarray, IvfPlan]:
    """``(sims, idx, plan)``: each ``queries`` row's ``k`` nearest ``gallery`` rows (one
    shop's listings among the others'), or with ``gallery=None`` every row's among all rows
    (:func:`ivf_knn`), by the IVF search over the gallery's lists planned on a sample of the
    queries for ``recall`` of their exact neighbours. ``scan`` replaces the self-search's
    scan only."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    x = q if gallery is None else np.ascontiguousarray(gallery, dtype=np.float32)
    n = len(x)
    k = min(k, n)
    seconds = {}
    start = time.perf_counter()
    centroids = train_centroids(x, nlist or max(1, int(2 * np.sqrt(n))))
    seconds["centroids"] = time.perf_counter() - start
    start = time.perf_counter()
    sample = np.random.default_rng(0).choice(len(q), min(RECALL_SAMPLE, len(q)), replace=False)
    exact = sample_knn(x, sample, k, queries=None if gallery is None else q)
    # the plan needs the lists of the sample's neighbours only: the one pass over all rows
    # that follows finds each row's list and its probes together
    neighbours = np.unique(exact[exact >= 0])
    sample_lists = np.zeros(n, dtype=np.int32)
    sample_lists[neighbours] = _nearest_centroids(x[neighbours], centroids, 1)[:, 0]
    if nprobe is None:
        most = min(len(centroids), max(1, MAX_SCAN_ROWS * len(centroids) // n))
        nprobe, planned_recall = plan_probes(q[sample], exact, centroids, sample_lists,
                                             recall, most)
        capped = planned_recall < recall and nprobe == most
    else:
        planned_recall, capped = float(probe_recall(q[sample], exact, centroids,
                                                    sample_lists)[nprobe - 1]), False
    seconds["plan"] = time.perf_counter() - start
    start = time.perf_counter()
    probes = _nearest_centroids(q, centroids, nprobe)
    # a row's list is its nearest centroid: in a self-search the queries' first probe
    lists = probes[:, 0] if gallery is None else _nearest_centroids(x, centroids, 1)[:, 0]
    seconds["probes"] = time.perf_counter() - start
    start = time.perf_counter()
    if gallery is None:
        sims, idx = (scan or grouped_search)(x, centroids, lists, k, nprobe, progress, probes)
    else:
        sims, idx = grouped_search(x, centroids, lists, k, nprobe, progress, probes,
                                   query_vectors=q)
    seconds["search"] = time.perf_counter() - start
    reached = neighbor_recall(idx[sample], exact)
    plan = IvfPlan(n, len(centroids), nprobe, recall, planned_recall, reached, len(sample),
                   seconds, capped)
    return sims, idx, plan


def sample_knn(x: np.ndarray, sample: np.ndarray, k: int, block: int | None = None,
               queries: np.ndarray | None = None) -> np.ndarray:
    """The exact top-``k`` rows of each ``sample`` row (of ``queries``, default ``x``
    itself) among all of ``x`` (ordered as
    :func:`exact_knn` orders them): a few queries against every row, as matrix products and
    one ``topk`` per ``block`` of queries (default: as many as keep a block's scores within
    :data:`SAMPLE_BLOCK_SCORES`; FAISS's flat search keeps a heap per row instead, ~3x slower
    for 1,000 queries against 1M rows)."""
    import torch

    block = block or max(1, SAMPLE_BLOCK_SCORES // len(x))

    with warnings.catch_warnings():  # a read-only memory map is only ever read here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        data = torch.from_numpy(x)
    asked = data if queries is None else torch.from_numpy(queries)
    sims = np.empty((len(sample), k), dtype=np.float32)
    idx = np.empty((len(sample), k), dtype=np.int64)
    for lo in range(0, len(sample), block):
        top_s, top_i = torch.topk(asked[sample[lo:lo + block]] @ data.T, k, dim=1)
        sims[lo:lo + block], idx[lo:lo + block] = top_s.numpy(), top_i.numpy()
    order_ties(sims, idx)
    return idx


def coarse_lists(x: np.ndarray, nlist: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids, lists)``: :func:`train_centroids` and the list of every row (its
    nearest centroid)."""
    centroids = train_centroids(x, nlist, seed)
    return centroids, _nearest_centroids(x, centroids, 1)[:, 0]


def train_centroids(x: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means centroids of ``x``'s rows, trained on
    :data:`KMEANS_ROWS_PER_LIST` rows a list."""
    import faiss

    n, d = x.shape
    nlist = max(1, min(nlist, n))
    per_list = KMEANS_ROWS_PER_LIST
    train = (x[np.random.default_rng(seed).choice(n, per_list * nlist, replace=False)]
             if n > per_list * nlist else x)
    kmeans = faiss.Kmeans(d, nlist, niter=KMEANS_ITERATIONS, seed=seed, spherical=True,
                          verbose=False, min_points_per_centroid=1,
                          max_points_per_centroid=per_list)
    kmeans.train(train)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def plan_probes(queries: np.ndarray, exact: np.ndarray, centroids: np.ndarray,
                lists: np.ndarray, target: float, most: int | None = None) -> tuple[int, float]:
    """The fewest lists (at most ``most``) to probe for the sampled ``queries`` to find at
    least ``target`` of their ``exact`` neighbours, and the recall that gives."""
    found = probe_recall(queries, exact, centroids, lists)
    nprobe = min(int(np.searchsorted(found, target - 1e-12) + 1), most or len(found))
    return nprobe, float(found[nprobe - 1])


def probe_recall(queries: np.ndarray, exact: np.ndarray, centroids: np.ndarray,
                 lists: np.ndarray) -> np.ndarray:
    """The recall of the ``exact`` neighbours of ``queries`` with 1, 2, ... lists probed: a
    query finds a neighbour exactly when the neighbour's list is among the query's nearest
    centroids, so every count follows from each neighbour's list's rank among them."""
    order = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
    valid = exact >= 0
    needed = np.take_along_axis(rank, lists[np.where(valid, exact, 0)], axis=1)
    needed = needed[valid]  # probes each neighbour needs, less one
    if needed.size == 0:
        return np.ones(len(centroids))
    return np.cumsum(np.bincount(needed, minlength=len(centroids))) / needed.size


def grouped_search(x: np.ndarray, centroids: np.ndarray, lists: np.ndarray, k: int,
                   nprobe: int, progress: bool = False, probes: np.ndarray | None = None,
                   queries: np.ndarray | None = None, prune: bool = True,
                   query_vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every row's (or the ``queries`` rows') ``k`` nearest rows among the lists of its
    ``nprobe`` nearest centroids (``probes``, one row per query, when already known), list
    by list; ``query_vectors`` searches those rows (or their ``queries`` rows) among ``x``
    instead of ``x``'s own. The rows of a list against all the queries that probe it is one
    matrix product, merged into each query's running top ``k`` (``-1`` pads what is not
    filled). Each query's nearest list is scanned first, so that in the other lists only the
    few scores that beat its running ``k``-th best need a top-k and a merge
    (``prune=False``: every score does, as before; ``benchmarks/bench_search.py`` compares
    the two)."""
    import torch

    n = len(x)
    source = x if query_vectors is None else np.ascontiguousarray(query_vectors, np.float32)
    asked = torch.from_numpy(np.arange(len(source)) if queries is None
                             else np.asarray(queries))
    if probes is None:
        probes = _nearest_centroids(source[asked.numpy()], centroids, nprobe)
    members = np.argsort(lists, kind="stable")
    member_bounds = np.searchsorted(lists[members], np.arange(len(centroids) + 1))
    with warnings.catch_warnings():  # a read-only memory map is only ever read here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        data = torch.from_numpy(x)
        asking = data if query_vectors is None else torch.from_numpy(source)
    best_s = torch.full((len(asked), k), -np.inf, dtype=torch.float32)
    best_i = torch.full((len(asked), k), -1, dtype=torch.int64)
    # the nearest lists first: every query's running lists are empty there, nothing to prune
    # or merge
    _scan_lists(data, asked, members, member_bounds, probes[:, :1], best_s, best_i,
                progress and "IVF grouped scan, nearest lists", first=True, asking=asking)
    _scan_lists(data, asked, members, member_bounds, probes[:, 1:nprobe], best_s, best_i,
                progress and "IVF grouped scan, other lists", prune=prune, asking=asking)
    sims = best_s.numpy()
    idx = best_i.numpy().astype(index_dtype(n))
    idx[~np.isfinite(sims)] = -1
    order_ties(sims, idx)
    return sims, idx


def _scan_lists(data, asked, members: np.ndarray, member_bounds: np.ndarray,
                probes: np.ndarray, best_s, best_i, progress: str | bool,
                prune: bool = False, first: bool = False, asking=None) -> None:
    """Scan every list against the queries (rows ``asked`` of ``asking``, default ``data``
    itself) that probe it in
    ``probes``, merging into the running ``best_s`` / ``best_i`` in place: only queries whose
    best score in the list is at least their current ``k``-th best take a top-k and a merge
    (``prune``; else every query). ``first``: each query probes one list here and its running
    lists are still empty, so its top-k is stored as it is. Queries and scores are written
    into buffers made once (a fresh allocation per list costs page faults: ~10 % of the
    scan). ``progress`` is the progress bar's label (False: none)."""
    import torch

    from shopee_match.progress import progress_bar

    if probes.shape[1] == 0:
        return
    k = best_s.shape[1]
    nlist = len(member_bounds) - 1
    flat = probes.ravel()
    by_list = np.argsort(flat, kind="stable")  # (query, probe) slots, grouped by list
    probe_bounds = np.searchsorted(flat[by_list], np.arange(nlist + 1))
    dim = data.shape[1]
    query_buffer = torch.empty(QUERY_BLOCK * dim, dtype=data.dtype)
    score_buffer = torch.empty(QUERY_BLOCK * int(np.diff(member_bounds).max()), dtype=data.dtype)
    for c in progress_bar(range(nlist), desc=progress or "", disable=not progress,
                          leave=False):
        rows = torch.from_numpy(members[member_bounds[c]:member_bounds[c + 1]])
        probing = by_list[probe_bounds[c]:probe_bounds[c + 1]] // probes.shape[1]
        if not len(rows) or not len(probing):
            continue
        block = data[rows].T.contiguous()
        for lo in range(0, len(probing), QUERY_BLOCK):
            q = torch.from_numpy(probing[lo:lo + QUERY_BLOCK])
            m = len(q)
            queries = torch.index_select(data if asking is None else asking, 0, asked[q],
                                         out=query_buffer[:m * dim].view(m, dim))
            scores = torch.mm(queries, block,
                              out=score_buffer[:m * len(rows)].view(m, len(rows)))
            if first:
                width = min(k, len(rows))
                top_s, top_j = torch.topk(scores, width, dim=1)
                best_s[q, :width], best_i[q, :width] = top_s, rows[top_j]
                continue
            if prune:  # one pass over the scores: a row's best against its k-th best
                hit = scores.amax(dim=1) >= best_s[q, -1]
                if not bool(hit.any()):
                    continue
                if not bool(hit.all()):
                    q, scores = q[hit], scores[hit]
            # unsorted: the merge's top-k orders them (20 % less than a sorted top-k)
            top_s, top_j = torch.topk(scores, min(k, len(rows)), dim=1, sorted=False)
            merged_s = torch.cat([best_s[q], top_s], dim=1)
            merged_i = torch.cat([best_i[q], rows[top_j]], dim=1)
            keep_s, keep = torch.topk(merged_s, k, dim=1)
            best_s[q], best_i[q] = keep_s, torch.gather(merged_i, 1, keep)


def _nearest_centroids(x: np.ndarray, centroids: np.ndarray, m: int) -> np.ndarray:
    """Each row's ``m`` nearest centroids (inner product), nearest first, as int32."""
    import faiss

    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    found = np.empty((len(x), m), dtype=np.int32)
    for lo in range(0, len(x), QUERY_BLOCK * 8):
        found[lo:lo + QUERY_BLOCK * 8] = quantizer.search(x[lo:lo + QUERY_BLOCK * 8], m)[1]
    return found
