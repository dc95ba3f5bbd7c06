"""Link two catalogs: which of *their* listings is *my* product.

:func:`link_catalogs` puts catalog A and catalog B side by side as two sources and runs a
saved candidate on them through the same apply pipeline as ``submit`` and ``dedupe``
(:func:`~shopee_match.apply.pipeline.apply_candidate`), searching each listing among the other
catalog's listings only. Every candidate pair between the two becomes one row of
``links.csv``: both ids and titles, the fused and per-modality similarities, the second
stage's score (exact for accepted pairs; a rejected pair that could not reach the threshold may
show a value below it, as its scoring was skipped), the rank of B's listing among A's
neighbours (empty when only B's side listed it), and whether the candidate accepts the pair
(from either side, as ``submit`` gives each listing its own accepted neighbours).
``one_to_one`` keeps each listing's best mutual match only, the usual price-comparison case;
``high_precision`` keeps those scoring at least the candidate's high-precision threshold (its
one-to-one operating point chosen on val by notebook 05: links to accept without review).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.data.schema import IMAGE_OK, IMAGE_PATH, POSTING_ID, SOURCE, TITLE
from shopee_match.match.ivf import RECALL_TARGET

SIDES = ("A", "B")


@dataclass
class Links:
    """The candidate pairs between two catalogs and the candidate that scored them."""

    pairs: pd.DataFrame  # id_a, id_b, title_a, title_b, similarity, sim_*, score, rank, accepted
    n_a: int
    n_b: int
    candidate: str
    one_to_one: bool = False
    high_precision: dict | None = None  # the candidate's point, when links were cut at it

    def accepted(self) -> pd.DataFrame:
        """The accepted links only."""
        return self.pairs[self.pairs["accepted"]]

    def summary(self) -> str:
        """Lines for the terminal: how many listings of each catalog found a match."""
        ok = self.accepted()
        found_a, found_b = ok["id_a"].nunique(), ok["id_b"].nunique()
        kind = "best mutual match only" if self.one_to_one else "every accepted match"
        if self.high_precision is not None:
            point = self.high_precision
            kind += (f", score >= {point['threshold']:.4f}: val precision "
                     f"{point.get('val precision', float('nan')):.3f} on the data it was "
                     f"chosen on")
        return (f"candidate {self.candidate}: {len(ok)} links accepted ({kind}) of "
                f"{len(self.pairs)} candidate pairs\n"
                f"  A: {found_a} of {self.n_a} listings found a match in B "
                f"({found_a / max(self.n_a, 1):.1%})\n"
                f"  B: {found_b} of {self.n_b} listings found a match in A "
                f"({found_b / max(self.n_b, 1):.1%})")


def side_by_side(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Both catalogs as one table with ``source`` A or B (ids may repeat across them: they
    are made unique inside as ``A:id`` / ``B:id``)."""
    frames = []
    for side, table in zip(SIDES, (a, b)):
        frame = table.copy()
        frame[POSTING_ID] = side + ":" + frame[POSTING_ID].astype(str)
        frame[SOURCE] = side
        frames.append(frame)
    both = pd.concat(frames, ignore_index=True)
    both[IMAGE_PATH] = both[IMAGE_PATH].fillna("") if IMAGE_PATH in both else ""
    both[IMAGE_OK] = both[IMAGE_OK].fillna(False).astype(bool) if IMAGE_OK in both else False
    return both


def link_catalogs(a: pd.DataFrame, b: pd.DataFrame, candidate, one_to_one: bool = False,
                  engine: str = "auto", progress: bool = True,
                  cache_dir: str | Path | None = None,
                  recall: float = RECALL_TARGET, executor=None,
                  high_precision: bool = False) -> Links:
    """Every candidate pair between catalogs ``a`` and ``b`` (loaded postings) under
    ``candidate`` (a :class:`~shopee_match.apply.candidates.Candidate`), scored and decided
    (embedded and scored on ``executor``'s cluster when there is one). ``high_precision``
    (one-to-one too) accepts only best mutual matches at or above the candidate's
    high-precision threshold; a candidate without one is an error."""
    from shopee_match.apply.dedupe import undirected_scores
    from shopee_match.apply.pipeline import apply_candidate
    from shopee_match.match.decision import candidate_pair_features
    from shopee_match.match.fusion import fused_vectors
    from shopee_match.match.neighbors import pair_cosine

    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"both catalogs need listings to link; got {len(a)} and {len(b)}")
    if high_precision and candidate.high_precision is None:
        raise ValueError(f"candidate {candidate.name} has no high-precision point (notebook 05 "
                         "saves one with its reranker; older candidates and retrained versions "
                         "have none): re-run notebook 05, name a candidate that has one "
                         "(--candidate), or drop --high-precision")
    both = side_by_side(a, b)
    applied = apply_candidate(both, candidate, cache_dir, progress, engine, recall,
                              link="across", executor=executor)
    pairs = candidate_pair_features(applied.gallery, candidate.config)
    n_a = len(a)
    first = pairs.i < n_a  # A's listing queried: (i, j) = (a, b); else (b, a)
    row_a = np.where(first, pairs.i, pairs.j)
    row_b = np.where(first, pairs.j, pairs.i)
    rank = np.where(first, pairs.features["rank"].to_numpy(), np.nan)
    table = pd.DataFrame({"a": row_a, "b": row_b, "rank": rank})
    for column in pairs.features.columns:
        if column.startswith("sim_"):
            table[column] = pairs.features[column].to_numpy()
    table = (table.groupby(["a", "b"], sort=True)
             .agg({"rank": "min", **{c: "max" for c in table.columns if c.startswith("sim_")}})
             .reset_index())
    a_rows, b_rows = table["a"].to_numpy(), table["b"].to_numpy()
    matches = applied.matches
    accepted = (np.asarray(matches[a_rows, b_rows]).ravel()
                | np.asarray(matches[b_rows, a_rows]).ravel()).astype(bool)
    scored = applied.scored_pairs()
    score = (np.full(len(table), np.nan) if scored is None else undirected_scores(
        *scored, np.minimum(a_rows, b_rows), np.maximum(a_rows, b_rows)))
    similarity = pair_cosine(fused_vectors(applied.gallery.vectors,
                                           candidate.config.fusion_weights), a_rows, b_rows)
    ids = both[POSTING_ID].str.split(":", n=1).str[1].to_numpy()
    titles = both[TITLE].to_numpy()
    out = pd.DataFrame({"id_a": ids[a_rows], "id_b": ids[b_rows],
                        "title_a": titles[a_rows], "title_b": titles[b_rows],
                        "similarity": similarity})
    for column in [c for c in table.columns if c.startswith("sim_")]:
        out[column] = table[column]
    out["score"] = score
    out["rank"] = table["rank"].astype("Int64")
    out["accepted"] = accepted
    if one_to_one or high_precision:  # decided on the unrounded scores
        out["accepted"] = accepted & best_mutual(out)
    if high_precision:
        out["accepted"] &= strength(out) >= candidate.high_precision["threshold"]
    rounded = ["similarity", "score", *[c for c in out.columns if c.startswith("sim_")]]
    out[rounded] = out[rounded].round(4)
    out = out.sort_values(["id_a", "accepted", "score", "similarity"],
                          ascending=[True, False, False, False], kind="stable")
    return Links(out.reset_index(drop=True), n_a, len(b), candidate.name,
                 one_to_one or high_precision,
                 candidate.high_precision if high_precision else None)


def best_mutual(links: pd.DataFrame) -> np.ndarray:
    """Mask of the accepted pairs that are both listings' best accepted pair (by the second
    stage's score, else the similarity; ties to the smaller id)."""
    from shopee_match.match.pairs import best_accepted_mutual

    a = pd.factorize(links["id_a"], sort=True)[0]  # codes in id order: ties to the smaller id
    b = pd.factorize(links["id_b"], sort=True)[0] + a.max(initial=-1) + 1
    return best_accepted_mutual(a, b, strength(links), links["accepted"].to_numpy(dtype=bool))


def strength(links: pd.DataFrame) -> np.ndarray:
    """What ranks and cuts links: the second stage's score (a pair it never scored: -inf),
    or the fused similarity when the candidate has no second stage."""
    if links["score"].notna().any():
        return links["score"].fillna(-np.inf).to_numpy(dtype=float)
    return links["similarity"].to_numpy(dtype=float)
