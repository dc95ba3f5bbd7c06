"""Self-search on Ray: the vectors go to the object store once, blocks of queries are
searched by Ray tasks (retried if their worker dies), the lists come back in row order.

Up to :data:`~shopee_match.match.ivf.EXACT_MAX_ROWS` rows (and for sparse TF-IDF) each task
runs the exact search of its queries against every row
(:func:`~shopee_match.match.neighbors.exact_knn`); above, the driver trains the IVF lists and
plans the probes for the recall target on a sample, as locally
(:func:`~shopee_match.match.ivf.ivf_knn`), and the tasks run the grouped scan of their
queries (:func:`~shopee_match.match.ivf.grouped_search`). Same lists as the local search
(ties of equal similarity aside, which are ordered by row either way).
"""

from __future__ import annotations

import functools

import numpy as np

from shopee_match.distributed.runtime import import_ray
from shopee_match.match.ivf import EXACT_MAX_ROWS, RECALL_TARGET

#: FAISS searches fewer queries than this with another kernel (not BLAS): no block is smaller
MIN_BLOCK = 32


def ray_self_knn(executor, vectors, k: int = 50, recall: float = RECALL_TARGET,
                 exact_max_rows: int = EXACT_MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Self-search lists ``(sims, idx)`` as :func:`~shopee_match.match.ivf.self_knn` gives
    them, its exact search or IVF scan spread over ``executor``'s cluster."""
    from shopee_match.match.ivf import self_knn

    return self_knn(vectors, k, exact_max_rows, recall,
                    exact=functools.partial(_ray_exact, executor),
                    scan=functools.partial(_ray_scan, executor))


def query_blocks(n: int, rows: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` blocks of about ``rows`` queries covering ``n``, none under
    :data:`MIN_BLOCK` (a short tail joins the block before it)."""
    bounds = list(range(0, n, max(rows, MIN_BLOCK))) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_BLOCK:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def _ray_exact(executor, x, k):
    """:func:`~shopee_match.match.neighbors.exact_knn` of blocks of queries on Ray tasks."""
    return _gather(executor, _exact_block, x, query_blocks(x.shape[0], executor.query_rows),
                   k, "exact kNN on Ray")


def _ray_scan(executor, x, centroids, lists, k, nprobe, progress, probes):
    """:func:`~shopee_match.match.ivf.grouped_search` of blocks of queries on Ray tasks
    (``probes``: every row's, as :func:`~shopee_match.match.ivf.ivf_knn` found them)."""
    return _gather(executor, _scan_block, x, query_blocks(len(x), executor.query_rows), k,
                   "IVF scan on Ray", centroids, lists, nprobe, probes)


def _gather(executor, block_fn, x, blocks, k, desc, *shared):
    """Run ``block_fn`` on every block of queries as Ray tasks; the lists in row order."""
    from shopee_match.progress import progress_bar

    ray = import_ray()
    refs = [ray.put(item) for item in (x, *shared)]  # once, not once per task
    task = ray.remote(num_cpus=executor.cpus_per_actor, max_retries=3)(block_fn)
    pending = {task.remote(lo, hi, k, executor.threads(), *refs): lo for lo, hi in blocks}
    found = {}
    with progress_bar(total=x.shape[0], desc=desc, disable=not executor.progress,
                      leave=False) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            lo = pending.pop(ready[0])
            found[lo] = ray.get(ready[0])
            bar.update(len(found[lo][0]))
    sims = np.concatenate([found[lo][0] for lo, _ in blocks])
    idx = np.concatenate([found[lo][1] for lo, _ in blocks])
    return sims, idx


def _exact_block(lo: int, hi: int, k: int, threads: int, x):
    """Exact lists of queries ``lo:hi`` against every row (on a worker)."""
    _limit_threads(threads)
    from shopee_match.match.neighbors import exact_knn

    return exact_knn(x[lo:hi], x, k=k)


def _scan_block(lo: int, hi: int, k: int, threads: int, x, centroids, lists, nprobe, probes):
    """The grouped IVF scan of queries ``lo:hi`` (on a worker)."""
    _limit_threads(threads)
    from shopee_match.match.ivf import grouped_search

    return grouped_search(x, centroids, lists, k, nprobe, probes=probes[lo:hi],
                          queries=np.arange(lo, hi))


def _limit_threads(threads: int) -> None:
    """A task computes with its share of the node's cores (FAISS's OpenMP and torch)."""
    import faiss
    import torch

    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
