"""Candidate pairs (each listing and its neighbours) and the features a second stage reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shopee_match.match.neighbors import pair_cosine, query_rows, real_neighbors
from shopee_match.match.thresholds import neighbor_sim_stats


def candidate_pairs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, rank)`` for every real neighbour j of every query i (rank 1 = nearest other)."""
    mask = real_neighbors(idx)
    rank = np.cumsum(mask, axis=1)
    return query_rows(idx, mask), idx[mask], rank[mask]


def best_mutual_pairs(i: np.ndarray, j: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mask of the pairs ``(i[t], j[t])`` that are both rows' best: no other pair of ``i[t]``
    or of ``j[t]`` (in either direction) scores higher, ties going to the smaller other row.
    Both directions of a pair get the same answer (the higher of their scores counts): a
    one-to-one matching, as linking two shops' catalogs usually wants."""
    i, j = np.asarray(i), np.asarray(j)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    score = np.asarray(scores, dtype=float)
    ends = pd.DataFrame({"row": np.concatenate([lo, hi]), "other": np.concatenate([hi, lo]),
                         "score": np.concatenate([score, score])})
    best = (ends.sort_values(["row", "score", "other"], ascending=[True, False, True],
                             kind="stable")
            .drop_duplicates("row").set_index("row")["other"])
    return (best.reindex(lo).to_numpy() == hi) & (best.reindex(hi).to_numpy() == lo)


def best_accepted_mutual(i: np.ndarray, j: np.ndarray, scores: np.ndarray,
                         accepted: np.ndarray) -> np.ndarray:
    """Mask of the accepted pairs ``(i[t], j[t])`` that are both rows' best accepted pair
    (:func:`best_mutual_pairs` among the accepted ones): the one-to-one rule of ``link
    --one-to-one``, and of the high-precision point chosen for it."""
    accepted = np.asarray(accepted, dtype=bool)
    keep = np.zeros(len(accepted), dtype=bool)
    keep[accepted] = best_mutual_pairs(np.asarray(i)[accepted], np.asarray(j)[accepted],
                                       np.asarray(scores, dtype=float)[accepted])
    return keep


def list_scores(idx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores of the pairs of :func:`candidate_pairs` (in its order) put back in place of
    each listing's neighbours: an ``idx``-shaped array, ``-inf`` for the listing itself and
    padding (to rank neighbours by a second stage, e.g. for NDCG)."""
    mask = real_neighbors(idx)
    if len(scores) != mask.sum():
        raise ValueError(f"{len(scores)} scores for {int(mask.sum())} candidate pairs")
    out = np.full(idx.shape, -np.inf)
    out[mask] = scores
    return out


def pair_features(i: np.ndarray, j: np.ndarray, rank: np.ndarray, vectors: dict,
                  sims: np.ndarray, idx: np.ndarray, phash: Sequence[str] | None = None,
                  titles: Sequence[str] | None = None) -> pd.DataFrame:
    """Features of candidate pairs for the pair classifier.

    One similarity per modality in ``vectors`` (``sim_<name>``, names sorted), the neighbour
    rank, the query's neighbour-similarity mean and std (from ``sims``/``idx``,
    usually the fused lists), if given whether the two photos share a phash, and with
    ``titles`` the :data:`TITLE_FEATURES` (:func:`title_pair_features`).
    """
    mean, std = neighbor_sim_stats(sims, idx)
    features = {f"sim_{name}": pair_cosine(vectors[name], i, j) for name in sorted(vectors)}
    features |= {"rank": rank.astype(np.float32), "query_sim_mean": mean[i],
                 "query_sim_std": std[i]}
    if phash is not None:
        phash = np.asarray(phash, dtype=object)
        features["same_phash"] = (phash[i] == phash[j]).astype(np.float32)
    frame = pd.DataFrame(features)
    if titles is not None:
        frame = pd.concat([frame, title_pair_features(titles, i, j)], axis=1)
    return frame


#: the title features of :func:`title_pair_features`, in order
TITLE_FEATURES = ("title_token_jaccard", "title_numbers_both", "title_number_jaccard",
                  "title_number_conflict")


def title_pair_features(titles: Sequence[str], i: np.ndarray, j: np.ndarray) -> pd.DataFrame:
    """What the two titles of each pair share, model-number aware: the Jaccard overlap of
    their words, whether both hold numbers (tokens with a digit: "2007", "rtx5070", "16gb"),
    the Jaccard overlap of those, and whether both hold numbers but share none (a version,
    model or size that differs: "quickbooks 2007" against "quickbooks 2008")."""
    from sklearn.feature_extraction.text import CountVectorizer

    titles = [str(t) for t in titles]
    columns = {}
    for name, pattern in (("token", r"(?u)\b\w+\b"), ("number", r"(?u)\b\w*\d\w*\b")):
        try:
            marks = CountVectorizer(binary=True, token_pattern=pattern, dtype=np.float32
                                    ).fit_transform(titles).tocsr()
        except ValueError:  # no token at all in these titles
            marks = None
        if marks is None:
            inter = size_i = size_j = np.zeros(len(i), dtype=np.float32)
        else:
            counts = np.asarray(marks.sum(axis=1), dtype=np.float32).ravel()
            inter, size_i, size_j = pair_cosine(marks, i, j), counts[i], counts[j]
        union = size_i + size_j - inter
        columns[name] = (np.where(union > 0, inter / np.maximum(union, 1), 0.0), size_i > 0,
                         size_j > 0, inter > 0)
    token_jaccard = columns["token"][0]
    number_jaccard, has_i, has_j, shared = columns["number"]
    both = has_i & has_j
    return pd.DataFrame({"title_token_jaccard": token_jaccard.astype(np.float32),
                         "title_numbers_both": both.astype(np.float32),
                         "title_number_jaccard": number_jaccard.astype(np.float32),
                         "title_number_conflict": (both & ~shared).astype(np.float32)})


def with_ce(features: pd.DataFrame, ce: np.ndarray) -> pd.DataFrame:
    """Pair features with the cross-encoder's probability as one more column
    (``cross_encoder``), as the reranker's classifier reads them."""
    return features.assign(cross_encoder=np.asarray(ce, dtype=np.float32))
