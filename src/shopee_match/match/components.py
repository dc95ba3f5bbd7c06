"""Connected components of accepted pairs: clusters, with chains cut at their weakest links.

A component far larger than a product group usually means chained matches (A~B, B~C, ...):
components above ``max_size`` are cut at their weakest edges (:func:`capped_components`).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from shopee_match.match.matrices import cluster_matrix

#: largest component connected components may form: twice Shopee's largest group (51);
#: bigger ones are chains through product families, cut at their weakest edges
MAX_COMPONENT = 100


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


def join_components(labels: np.ndarray, matched: list[int], max_size: int = MAX_COMPONENT
                    ) -> list:
    """The components a new listing joins when it matches the rows ``matched`` (nearest
    first): each matched row's component, taken in turn while the new listing and the
    components taken stay within ``max_size`` listings. Returns their labels."""
    joined, size = [], 1
    for row in matched:
        component = labels[row]
        if component in joined:
            continue
        members = int((labels == component).sum())
        if size + members <= max_size:
            joined.append(component)
            size += members
    return joined


def labels_with_new_row(labels: np.ndarray, joined: list) -> np.ndarray:
    """``labels`` with one more row, which forms one component with the components
    ``joined`` (:func:`join_components`)."""
    new = labels.max(initial=-1) + 1
    return np.append(np.where(np.isin(labels, joined), new, labels), new)
