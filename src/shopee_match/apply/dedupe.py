"""Deduplicate an unlabelled catalog into clusters with a saved candidate.

A candidate (see :mod:`shopee_match.apply.candidates`) is tuned on labelled data; here it
runs on listings without labels. Its mutual pairs (each listing accepted by the other) become
a graph whose connected components are the clusters: every listing gets a ``cluster_id`` (a
listing with no match is a cluster of one). A component far larger than a product group
usually means chained matches (A~B, B~C, ...), so components above ``max_cluster`` are cut
at their weakest pairs (:func:`~shopee_match.match.components.capped_components`); the cut
pairs stay in ``pairs.csv``, marked, for review.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.data.schema import POSTING_ID, TITLE
from shopee_match.match.ivf import RECALL_TARGET

#: clusters are cut at their weakest pairs down to this size (Shopee's groups have 2-51)
MAX_CLUSTER = 50


@dataclass
class Deduped:
    """Clusters and accepted pairs of one catalog."""

    clusters: pd.DataFrame  # posting_id, cluster_id, cluster_size (catalog order)
    pairs: pd.DataFrame  # posting_id_a, posting_id_b, similarity, score, cluster_id, cut
    candidate: str
    max_cluster: int

    def sizes(self) -> pd.DataFrame:
        """How many clusters (and listings) have each size band."""
        size = self.clusters.drop_duplicates("cluster_id")["cluster_size"]
        bands = pd.cut(size, [0, 1, 2, 5, 10, max(self.max_cluster, 11)],
                       labels=["1 (no match)", "2", "3-5", "6-10", f"11-{self.max_cluster}"])
        table = size.groupby(bands, observed=False).agg(["count", "sum"])
        return table.rename(columns={"count": "clusters", "sum": "listings"})

    def largest(self, postings: pd.DataFrame, n: int = 5, titles: int = 3) -> pd.DataFrame:
        """The ``n`` largest clusters with a few of their titles."""
        title = dict(zip(postings[POSTING_ID].astype(str), postings[TITLE]))
        multi = self.clusters[self.clusters["cluster_size"] > 1]
        rows = []
        for cid, members in multi.groupby("cluster_id")[POSTING_ID]:
            rows.append({"cluster_id": cid, "listings": len(members),
                         "titles": " | ".join(title[p] for p in members[:titles])})
        table = pd.DataFrame(rows, columns=["cluster_id", "listings", "titles"])
        return table.sort_values(["listings", "cluster_id"], ascending=[False, True]).head(n)

    def summary(self, postings: pd.DataFrame) -> str:
        """Lines for the terminal: clusters by size, the largest, pairs cut."""
        n = len(self.clusters)
        matched = int((self.clusters["cluster_size"] > 1).sum())
        lines = [f"{n} listings -> {self.clusters['cluster_id'].nunique()} clusters with "
                 f"candidate {self.candidate}; {matched} listings have a duplicate, "
                 f"{len(self.pairs)} pairs accepted",
                 self.sizes().to_string(), "largest clusters:",
                 self.largest(postings).to_string(index=False)]
        cut = self.pairs["cut"]
        if cut.any():
            lines.append(f"WARNING: {int(cut.sum())} accepted pair(s) were cut so that no "
                         f"cluster holds more than {self.max_cluster} listings: chained "
                         "matches (A~B, B~C, ...). They are marked cut in pairs.csv; a stricter "
                         "candidate or a larger --max-cluster changes them.")
        return "\n".join(lines)


def dedupe(postings: pd.DataFrame, candidate, engine: str = "auto",
           max_cluster: int = MAX_CLUSTER, progress: bool = True,
           cache_dir: str | Path | None = None, recall: float = RECALL_TARGET,
           link: str | None = None, executor=None) -> Deduped:
    """Run ``candidate`` (a :class:`~shopee_match.apply.candidates.Candidate`) on ``postings``
    and cluster its accepted pairs (embeddings cached in ``cache_dir``, default
    ``artifacts/embeddings``; ``recall``: of the search above 200,000 listings; ``link``: how a
    catalog with a source column is linked, default as the candidate was tuned; ``executor``:
    a :class:`~shopee_match.distributed.executor.RayExecutor` for the heavy steps, clusters
    made here)."""
    from shopee_match.apply.pipeline import apply_candidate
    from shopee_match.match.fusion import fused_vectors

    applied = apply_candidate(postings, candidate, cache_dir, progress, engine, recall, link,
                              executor)
    fused = fused_vectors(applied.gallery.vectors, candidate.config.fusion_weights)
    return cluster_matches(applied.matches, fused, postings[POSTING_ID].astype(str).to_numpy(),
                           candidate.name, max_cluster, applied.scored_pairs())


def cluster_matches(matches, fused: np.ndarray, ids: np.ndarray, name: str,
                    max_cluster: int = MAX_CLUSTER, scores=None) -> Deduped:
    """The clusters of a catalog's accepted pairs: ``matches`` (a sparse listing x listing
    matrix) kept where both listings accepted each other, joined into connected components
    cut at ``max_cluster``; pairs carry the ``fused`` vectors' similarity and, where there
    is a second stage, its ``scores`` (``(i, j, score)`` of the directed pairs it scored)."""
    from scipy import sparse

    from shopee_match.match.components import capped_components
    from shopee_match.match.neighbors import pair_cosine

    mutual = matches.multiply(matches.T).tocsr()  # accepted from both sides
    upper = sparse.triu(mutual, k=1).tocoo()
    a, b = upper.row, upper.col
    similarity = pair_cosine(fused, a, b)
    score = np.full(len(a), np.nan) if scores is None else undirected_scores(*scores, a, b)
    # chains are cut at their weakest pairs: by the second stage's score where there is one
    # (a pair only a union accepted counts as weakest), else by the fused similarity
    strength = similarity if scores is None else np.nan_to_num(score, nan=-1.0)
    cluster, _ = capped_components(a, b, strength, len(ids), max_cluster)
    sizes = np.bincount(cluster)
    clusters = pd.DataFrame({POSTING_ID: ids, "cluster_id": cluster,
                             "cluster_size": sizes[cluster]})
    pairs = pd.DataFrame({"posting_id_a": ids[a], "posting_id_b": ids[b],
                          "similarity": similarity.round(4), "score": np.round(score, 4),
                          "cluster_id": cluster[a], "cut": cluster[a] != cluster[b]})
    return Deduped(clusters, pairs, name, max_cluster)


def undirected_scores(i: np.ndarray, j: np.ndarray, scores: np.ndarray, a: np.ndarray,
                      b: np.ndarray) -> np.ndarray:
    """The score of each pair ``(a, b)`` (``a < b``): the higher of its two directions, NaN
    for a pair the second stage never scored (one added by a union)."""
    from shopee_match.match.metrics import pair_maxima

    by_pair = pair_maxima(i, j, score=np.asarray(scores, dtype=float))["score"]
    return by_pair.reindex(pd.MultiIndex.from_arrays([a, b])).to_numpy(dtype=float)


def write_deduped(result: Deduped, out: str | Path) -> tuple[Path, Path]:
    """Write ``clusters.csv`` at ``out`` and ``pairs.csv`` beside it (``clusters.parquet`` and
    ``pairs.parquet`` where ``out`` ends in ``.parquet``: smaller and typed, for catalogs with
    millions of pairs), as one unit: both are written in full beside their places first and
    renamed into place only then, so a failed write (a full disk) leaves the previous run's
    two files as they were."""
    from shopee_match.data.postings import is_parquet
    from shopee_match.files import atomic_path

    out = Path(out)
    parquet = is_parquet(out)
    pairs = out.with_name("pairs" + (out.suffix if parquet else ".csv"))
    with atomic_path(out) as clusters_tmp, atomic_path(pairs) as pairs_tmp:
        for frame, tmp in ((result.clusters, clusters_tmp), (result.pairs, pairs_tmp)):
            if parquet:
                frame.to_parquet(tmp, index=False)
            else:
                frame.to_csv(tmp, index=False)
    return out, pairs
