"""Which pairs people should look at: review queues built from a candidate's own scores.

:func:`scored_pair_table` lists a split's candidate pairs once each (``a`` < ``b``, rows of
the postings) with every stage's score (fused bi-encoder similarity, the cross-encoder's
probability where there is one, the candidate's own score) and its verdict. A queue is an
ordered selection of such rows (:func:`review_queue`):

- ``uncertain``: closest to the candidate's decision threshold, with a fixed share of
  random pairs mixed in (uncertainty alone never shows the model what it is sure and wrong
  about);
- ``gray_zone``: inside the candidate's gray band (notebook 05), most uncertain first;
- ``disagree``: pairs where the bi-encoder and the final verdict disagree;
- ``random``: a seeded random sample, the only queue whose answers estimate precision
  without bias;
- ``service``: pairs the matching service logged as gray (:func:`service_queue`).

Pairs already answered (:mod:`shopee_match.train.labels`) are never offered again.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

QUEUES = ("uncertain", "gray_zone", "disagree", "random", "service")


def scored_pair_table(galleries, split: str, config, scorer=None, parts: bool = True
                      ) -> pd.DataFrame:
    """Each candidate pair of ``split`` once (``a`` < ``b``: rows of the full postings),
    with ``bi_encoder`` (fused similarity), ``cross_encoder`` (NaN without one, or without
    ``parts``: scoring every pair with it is the slow part), ``score`` (the candidate's: its
    second stage's score, else the fused similarity), ``accepted`` (the candidate's verdict,
    either direction) and ``is_match`` (same label group)."""
    from shopee_match.match.decision import candidate_pair_features, decide
    from shopee_match.match.fusion import fused_vectors
    from shopee_match.match.neighbors import pair_cosine

    gallery = galleries.splits[split]
    scores, is_match = galleries.pair_scores(config, split, scorer)
    pairs = candidate_pair_features(gallery, config)
    fused = pair_cosine(fused_vectors(gallery.vectors, config.fusion_weights), pairs.i, pairs.j)
    scored = scorer.parts(pairs) if parts and scorer is not None and config.second_stage else {}
    ce = scored.get("cross_encoder", np.full(len(pairs), np.nan))
    matches = decide(gallery, config, scorer)
    accepted = np.asarray(matches[pairs.i, pairs.j]).ravel().astype(bool)
    rows = galleries.rows[split]
    table = pd.DataFrame({"a": rows[np.minimum(pairs.i, pairs.j)],
                          "b": rows[np.maximum(pairs.i, pairs.j)],
                          "bi_encoder": fused, "cross_encoder": ce, "score": scores,
                          "accepted": accepted, "is_match": is_match})
    table = table.sort_values("score", ascending=False, kind="stable")
    table = table.groupby(["a", "b"], as_index=False, sort=False).agg(
        bi_encoder=("bi_encoder", "max"), cross_encoder=("cross_encoder", "max"),
        score=("score", "max"), accepted=("accepted", "any"), is_match=("is_match", "first"))
    return table.reset_index(drop=True)


def decision_threshold(config, scores: np.ndarray, accepted: np.ndarray) -> float:
    """The score at which the candidate decides: its second stage's threshold, its static
    threshold, or (other strategies) the score that best separates what it accepted from
    what it did not."""
    if config.second_stage is not None:
        return float(config.second_stage.threshold)
    if config.strategy == "static" and config.value is not None:
        return float(config.value)
    return best_boundary(scores, accepted)


def best_boundary(scores: np.ndarray, accepted: np.ndarray) -> float:
    """The threshold on ``scores`` that agrees with ``accepted`` on the most pairs."""
    scores, accepted = np.asarray(scores, float), np.asarray(accepted, bool)
    if len(scores) == 0:
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s, acc = scores[order], accepted[order]
    # accepting the first t pairs: right on accepted ones among them, rejected ones after
    right = np.concatenate([[0], np.cumsum(acc)]) + np.concatenate(
        [np.cumsum((~acc)[::-1])[::-1], [0]])
    t = int(np.argmax(right))
    if t == 0:
        return float(s[0] + 1e-6)
    return float(s[t - 1] if t == len(s) else (s[t - 1] + s[t]) / 2)


def review_queue(table: pd.DataFrame, kind: str, n: int, *, threshold: float, posting_ids,
                 gray_band: tuple[float, float] | None = None, answered: Collection = (),
                 random_share: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` rows of :func:`scored_pair_table` to review, in order, with a ``queue``
    column; pairs whose :func:`~shopee_match.train.labels.pair_key` is in ``answered``
    (``posting_ids`` gives the ids of rows ``a``/``b``) are left out."""
    from shopee_match.train.active import pick_uncertain
    from shopee_match.train.labels import pair_key

    if kind not in QUEUES or kind == "service":
        raise ValueError(f"queue {kind!r}: choose one of {QUEUES[:-1]} here (the service's "
                         "requests come from service_queue)")
    ids = np.asarray(posting_ids, dtype=object)
    answered = set(answered)
    free = np.array([pair_key(ids[a], ids[b]) not in answered
                     for a, b in zip(table["a"], table["b"])], dtype=bool)
    scores = table["score"].to_numpy(float)
    margin = np.abs(scores - threshold)
    if kind == "uncertain":
        order = pick_uncertain(scores, threshold, n, exclude=~free, random_share=random_share,
                               seed=seed)
    elif kind == "random":
        order = np.random.default_rng(seed).permutation(np.flatnonzero(free))[:n]
    elif kind == "gray_zone":
        if gray_band is None:
            raise ValueError("this candidate has no gray band (notebook 05's reranker "
                             "carries one); choose the uncertain queue instead")
        ce = table["cross_encoder"].to_numpy(float)
        inside = free & (ce >= gray_band[0]) & (ce < gray_band[1])
        order = np.flatnonzero(inside)[np.argsort(margin[inside], kind="stable")][:n]
    else:  # disagree
        bi = table["bi_encoder"].to_numpy(float)
        bi_says = bi >= best_boundary(bi, table["accepted"].to_numpy())
        differ = free & (bi_says != table["accepted"].to_numpy())
        order = np.flatnonzero(differ)[np.argsort(margin[differ], kind="stable")][:n]
    return table.iloc[order].assign(queue=kind).reset_index(drop=True)


def service_queue(path: str | Path, n: int | None = None) -> pd.DataFrame:
    """Pairs the service logged as gray (``gray_zone.jsonl``: a ``/match`` request with each
    gray neighbour, a ``/pair`` request with its two titles), oldest first. The query side
    has no posting id: it gets ``request:<line>`` (photos are logged by digest only). A line
    that is not JSON is an error naming it."""
    path = Path(path)
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not JSON ({err}); the service writes "
                             "one JSON object per line") from err
        query = f"request:{number}"
        if record.get("endpoint") == "/pair":
            rows.append({"posting_id_1": f"{query}a", "posting_id_2": f"{query}b",
                         "title_1": record.get("title_a", ""),
                         "title_2": record.get("title_b", ""),
                         "score": record.get("score_a_b"), "cross_encoder": None})
        for neighbour in record.get("neighbours", []):
            rows.append({"posting_id_1": query, "posting_id_2": str(neighbour["posting_id"]),
                         "title_1": record.get("title", ""), "title_2": neighbour["title"],
                         "score": neighbour.get("score"),
                         "cross_encoder": neighbour.get("cross_encoder")})
    table = pd.DataFrame(rows, columns=["posting_id_1", "posting_id_2", "title_1", "title_2",
                                        "score", "cross_encoder"]).assign(queue="service")
    return table if n is None else table.head(n)


def with_listings(queue: pd.DataFrame, postings: pd.DataFrame, cross_encoder=None
                  ) -> pd.DataFrame:
    """``queue`` (rows ``a``/``b`` of ``postings``) with both postings' ids, titles and photo
    paths, as the labeller shows them; with a ``cross_encoder``, its probability of the pairs
    that lack one."""
    from shopee_match.data.schema import IMAGE_PATH, POSTING_ID, TITLE

    out = queue.copy()
    for side, rows in ((1, queue["a"].to_numpy()), (2, queue["b"].to_numpy())):
        out[f"posting_id_{side}"] = postings[POSTING_ID].to_numpy()[rows].astype(str)
        out[f"title_{side}"] = postings[TITLE].to_numpy()[rows]
        out[f"image_{side}"] = (postings[IMAGE_PATH].to_numpy()[rows] if IMAGE_PATH in postings
                                else "")
    missing = out["cross_encoder"].isna().to_numpy() if "cross_encoder" in out else None
    if cross_encoder is not None and missing is not None and missing.any():
        out.loc[missing, "cross_encoder"] = cross_encoder.score_titles(
            out["title_1"][missing].tolist(), out["title_2"][missing].tolist())
    return out
