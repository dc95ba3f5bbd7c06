"""Deduplicate an unlabelled catalog into clusters with a saved candidate.

A candidate (see :mod:`shopee_match.candidates`) is tuned on labelled data; here it runs on
listings without labels. Its mutual pairs (each listing accepted by the other) become a
graph whose connected components are the clusters: every listing gets a ``cluster_id`` (a
listing with no match is a cluster of one). A component far larger than a product group
usually means chained matches (A~B, B~C, ...), so components above ``max_cluster`` are cut at
their weakest pairs (:func:`~shopee_match.matching.capped_components`); the cut pairs stay in
``pairs.csv``, marked, for review.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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
        title = dict(zip(postings["posting_id"].astype(str), postings["title"]))
        multi = self.clusters[self.clusters["cluster_size"] > 1]
        rows = []
        for cid, members in multi.groupby("cluster_id")["posting_id"]:
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
           cache_dir: str | Path | None = None) -> Deduped:
    """Run ``candidate`` (a :class:`~shopee_match.candidates.Candidate`) on ``postings``
    and cluster its accepted pairs (embeddings cached in ``cache_dir``, default
    ``artifacts/embeddings``)."""
    from scipy import sparse

    from shopee_match.matching import capped_components, fused_vectors
    from shopee_match.neighbors import pair_cosine
    from shopee_match.submission import embed_for

    config = candidate.config
    vectors = embed_for(postings, config, cache_dir, progress=progress, engine=engine)
    matches, scores = _matches_and_scores(postings, vectors, config, candidate.load_model())
    matches = matches.multiply(matches.T).tocsr()  # mutual: accepted from both sides
    ids = postings["posting_id"].astype(str).to_numpy()
    upper = sparse.triu(matches, k=1).tocoo()
    a, b = upper.row, upper.col
    similarity = pair_cosine(fused_vectors(vectors, config.fusion_weights), a, b)
    score = np.full(len(a), np.nan) if scores is None else _pair_scores(*scores, a, b)
    # chains are cut at their weakest pairs: by the second stage's score where there is one
    # (a pair only a union accepted counts as weakest), else by the fused similarity
    strength = similarity if scores is None else np.nan_to_num(score, nan=-1.0)
    cluster, _ = capped_components(a, b, strength, len(ids), max_cluster)
    sizes = np.bincount(cluster)
    clusters = pd.DataFrame({"posting_id": ids, "cluster_id": cluster,
                             "cluster_size": sizes[cluster]})
    pairs = pd.DataFrame({"posting_id_a": ids[a], "posting_id_b": ids[b],
                          "similarity": similarity.round(4), "score": np.round(score, 4),
                          "cluster_id": cluster[a], "cut": cluster[a] != cluster[b]})
    return Deduped(clusters, pairs, candidate.name, max_cluster)


def _matches_and_scores(postings: pd.DataFrame, vectors: dict, config, model):
    """The candidate's match matrix and, with a second stage, its ``(i, j, scores)`` of every
    pair it scored (``None`` for a threshold candidate)."""
    from shopee_match.matching import predict_matches, second_stage_scores

    cache: dict = {}
    phash = postings["image_phash"].to_numpy() if "image_phash" in postings else None
    titles = postings["title"].fillna("").astype(str).to_numpy()
    matches = predict_matches(vectors, config, model, phash, cache=cache, titles=titles)
    if config.second_stage is None:
        return matches, None
    return matches, second_stage_scores(vectors, config, model, phash, cache, titles)


def _pair_scores(i: np.ndarray, j: np.ndarray, scores: np.ndarray, a: np.ndarray,
                 b: np.ndarray) -> np.ndarray:
    """The score of each pair ``(a, b)`` (``a < b``): the higher of its two directions, NaN
    for a pair the second stage never scored (one added by a union)."""
    by_pair = (pd.DataFrame({"a": np.minimum(i, j), "b": np.maximum(i, j), "score": scores})
               .groupby(["a", "b"])["score"].max())
    return by_pair.reindex(pd.MultiIndex.from_arrays([a, b])).to_numpy(dtype=float)


def reads_images(config) -> bool:
    """Whether a matcher configuration embeds photos (else titles only)."""
    from shopee_match.encoders import input_kind

    return any(input_kind(config.encoders[m], m) == "image" for m in config.modalities
               if m != "tfidf")


def choose_candidate(postings: pd.DataFrame, trained_on: str, split_seed: int = 0,
                     name: str | None = None, columns: str | dict | None = None,
                     image_size: int = 224, titles_only: bool = False):
    """The candidate to deduplicate with: the one named, else the best on val among those
    made from ``trained_on`` that need only what the catalog has (no photos, or
    ``titles_only``: title models only), else a quick threshold candidate built on
    ``trained_on`` (with a notice)."""
    from shopee_match.candidates import (
        candidates_dir,
        leaderboard,
        load_candidate,
        pick_candidate,
    )
    from shopee_match.encoders import input_kind
    from shopee_match.submission import quick_candidate, train_fingerprint

    has_images = (not titles_only and "image" in postings
                  and bool(postings["image_ok"].any()))
    fingerprint = train_fingerprint(trained_on, columns)
    if name:
        return pick_candidate(fingerprint, split_seed, name)[0]

    def fits(candidate) -> bool:
        return has_images or not reads_images(candidate.config)

    table = leaderboard(fingerprint, split_seed)
    for row in table[table["usable"]].itertuples():
        candidate = load_candidate(candidates_dir() / row.candidate)
        if fits(candidate):
            return candidate
    from shopee_match.embeddings import resolve_profile

    profile = {m: s for m, s in resolve_profile("offline").items()
               if has_images or input_kind(s, m) != "image"}
    what = "title-only listings" if titles_only else "this catalog"
    print(f"shopee-match: no saved candidate made from {trained_on!r} fits {what}; "
          "using a quick threshold candidate (run notebook 03 on it to save a better one).")
    return quick_candidate(trained_on, profile, image_size, split_seed, columns=columns)


def write_deduped(result: Deduped, out: str | Path) -> tuple[Path, Path]:
    """Write ``clusters.csv`` at ``out`` and ``pairs.csv`` beside it, atomically."""
    from shopee_match.files import atomic_write

    out = Path(out)
    pairs = out.with_name("pairs.csv")
    for table, path in ((result.clusters, out), (result.pairs, pairs)):
        with atomic_write(path, "w") as f:
            table.to_csv(f, index=False)
    return out, pairs
