"""A gallery: listings decided among one another, and what the decision reads of them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shopee_match.match.ivf import RECALL_TARGET


@dataclass
class Gallery:
    """Listings' vectors per modality (rows aligned; ``tfidf`` may be sparse) and, for the
    second stages, their photos' phash and their titles.

    ``order`` gives each row's place in a larger gallery when this one is a local view of it
    (the service decides a new listing among its neighbours): pairs are then read as the
    larger gallery reads them. ``recall`` is the share of exact neighbours the search of a
    gallery above 200,000 listings must find (:mod:`shopee_match.match.ivf`). ``cache`` keeps
    what does not depend on the knob being tuned (neighbour lists, pair features,
    second-stage scores) between calls on this gallery. ``sources`` (a code per row, see
    :func:`~shopee_match.match.sources.link_sources`) links across sources: each listing is
    decided among the other sources' listings only. Without ``exact_scores`` (a
    catalog decided at one threshold, as ``submit`` and ``dedupe`` do), a second stage may
    skip the work of scoring pairs that cannot reach its threshold; tuning needs them exact.
    ``executor`` (a :class:`~shopee_match.distributed.executor.RayExecutor`) runs the
    self-search on a cluster.
    """

    vectors: dict
    phash: np.ndarray | None = None
    titles: np.ndarray | None = None
    order: np.ndarray | None = None
    recall: float = RECALL_TARGET
    exact_scores: bool = True
    sources: np.ndarray | None = None
    executor: object = None
    cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def neighbors(self, weights: dict[str, float], k: int, blend_rounds: int = 0,
                  blend_top_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Self-search lists (``k`` columns, each row usually first in its own) of the fused
        ``weights`` (:func:`~shopee_match.match.fusion.fused_neighbors`), cached."""
        from shopee_match.match.fusion import fused_neighbors

        return fused_neighbors(self.vectors, weights, k, blend_rounds, blend_top_n, self.cache,
                               self.recall, self.sources, self.executor)

    def take(self, rows: np.ndarray) -> Gallery:
        """The gallery of some of its rows (a split), with a cache of its own."""
        def pick(values):
            return None if values is None else np.asarray(values, dtype=object)[rows]

        return Gallery({m: v[rows] for m, v in self.vectors.items()}, pick(self.phash),
                       pick(self.titles), recall=self.recall,
                       sources=None if self.sources is None else self.sources[rows],
                       executor=self.executor)
