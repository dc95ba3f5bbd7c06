"""The match decision: from a configuration and a gallery's vectors to each listing's match set.

One function, :func:`decide`, turns neighbour lists into match sets under a
:class:`~shopee_match.match.config.MatchConfig`: the threshold strategy and min-2, or the
second stage's score of each candidate pair, then the union with each ``union`` modality's
own threshold. :func:`predict_matches` runs it over every listing of a gallery (after the
self-search, with neighbourhood blending) and closes the sets over connected components;
the matching service (:mod:`shopee_match.apply.service`) runs it for one new listing among
its catalog neighbours, so both decide by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from shopee_match.match.components import component_labels
from shopee_match.match.gallery import Gallery
from shopee_match.match.matrices import (
    cluster_matrix,
    pairs_to_matrix,
    similarity_matrix,
    to_matrix,
    union,
)
from shopee_match.match.pairs import candidate_pairs, pair_features
from shopee_match.match.second_stage import CandidatePairs, PairScorer, score_pairs
from shopee_match.match.thresholds import STRATEGIES, min2, static_accept

Lists = tuple[np.ndarray, np.ndarray]


def neighbor_lists(gallery: Gallery, config) -> Lists:
    """The fused self-search lists a configuration decides on: ``config.k`` neighbours of
    every listing besides itself, after its blending rounds."""
    return gallery.neighbors(config.fusion_weights, config.k + 1, config.blend_rounds,
                             config.blend_top_n)


def union_lists(gallery: Gallery, config) -> dict[str, Lists]:
    """The self-search lists of each modality the configuration takes a union with."""
    return {m: gallery.neighbors({m: 1.0}, config.k + 1) for m in config.union}


def candidate_pair_features(gallery: Gallery, config, lists: Lists | None = None
                            ) -> CandidatePairs:
    """The candidate pairs of a gallery (every listing of ``lists``, default
    :func:`neighbor_lists`, with each of its neighbours) and their features, kept in the
    gallery's cache."""
    key = ("pair_features", *_fused_key(config))
    if key not in gallery.cache:
        sims, idx = neighbor_lists(gallery, config) if lists is None else lists
        i, j, rank = candidate_pairs(idx)
        gallery.cache[key] = CandidatePairs(gallery, i, j, pair_features(
            i, j, rank, gallery.vectors, sims, idx, gallery.phash, gallery.titles))
    return gallery.cache[key]


def pair_training_data(gallery: Gallery, labels: Sequence, config
                       ) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and labels (same group or not) of a gallery's candidate pairs, as a second
    stage sees them (:func:`candidate_pair_features`)."""
    pairs = candidate_pair_features(gallery, config)
    labels = np.asarray(labels)
    return pairs.features, labels[pairs.i] == labels[pairs.j]


def scored_pairs(gallery: Gallery, config, scorer: PairScorer | None,
                 lists: Lists | None = None) -> tuple[CandidatePairs, np.ndarray]:
    """A configuration's candidate pairs and its second stage's score of each, scored once
    per gallery and scorer (kept in the cache) whatever the threshold; in a gallery that
    does not need ``exact_scores``, scored only as far as the configuration's threshold
    needs (a pair that cannot reach it gets a bound below it)."""
    pairs = candidate_pair_features(gallery, config, lists)
    accept_at = None if gallery.exact_scores else config.second_stage.threshold
    key = ("second_stage", scorer, accept_at, *_fused_key(config))  # the scorer by identity
    if key not in gallery.cache:
        gallery.cache[key] = score_pairs(scorer, pairs, config.second_stage.kind, accept_at)
    return pairs, gallery.cache[key]


def decide(gallery: Gallery, config, scorer: PairScorer | None = None,
           lists: Lists | None = None, unions: dict[str, Lists] | None = None
           ) -> sparse.csr_matrix:
    """Match sets of the listings of ``lists`` (default: every listing of the gallery, from
    :func:`neighbor_lists`) under ``config``, before connected components.

    Row ``r`` of ``lists`` is listing ``r`` of the gallery, and the result has one row per
    list and one column per listing, self included. A listing matches the neighbours its
    second stage scores at least the stage's threshold (``scorer``: the fitted stage), or
    else those its threshold strategy (and min-2) accepts; plus, for each ``union`` modality,
    the neighbours in that modality's lists (``unions``, default :func:`union_lists`) at or
    above its own threshold.
    """
    sims, idx = neighbor_lists(gallery, config) if lists is None else lists
    unions = union_lists(gallery, config) if unions is None else unions
    if config.second_stage is not None:
        pairs, scores = scored_pairs(gallery, config, scorer, (sims, idx))
        keep = scores >= config.second_stage.threshold
        matches = pairs_to_matrix(pairs.i[keep], pairs.j[keep], len(idx), len(gallery))
    else:
        accepted = STRATEGIES[config.strategy](sims, idx, config.value)
        if config.min2 is not None:
            accepted = min2(sims, idx, accepted, config.min2)
        matches = to_matrix(idx, accepted, len(gallery))
    for modality, threshold in config.union.items():
        s, i = unions[modality]
        matches = union(matches, to_matrix(i, static_accept(s, i, threshold), len(gallery)))
    return matches


def predict_matches(gallery: Gallery, config, scorer: PairScorer | None = None
                    ) -> sparse.csr_matrix:
    """Apply a :class:`~shopee_match.match.config.MatchConfig` to every listing of a gallery:
    the ``n x n`` boolean match matrix, self included.

    The gallery's vectors must hold ``config.modalities``; ``scorer`` is the fitted second
    stage when the configuration has one. With ``components`` every listing matches its
    whole cluster (:func:`cluster_labels`). Call it again on the same gallery (a sweep) and
    neighbour lists, pair features and second-stage scores come from its cache.
    """
    if config.components:
        return cluster_matrix(cluster_labels(gallery, config, scorer))
    return decide(gallery, config, scorer)


def cluster_labels(gallery: Gallery, config, scorer: PairScorer | None = None) -> np.ndarray:
    """Each listing's cluster under ``config``'s rule: connected components of its match
    sets, cut at their weakest edges (the fused similarity) until none is larger than
    ``config.max_component``."""
    matches = decide(gallery, config, scorer)
    return component_labels(matches, similarity_matrix(*neighbor_lists(gallery, config)),
                            config.max_component)[0]


def _fused_key(config) -> tuple:
    return (tuple(sorted(config.fusion_weights.items())), config.k, config.blend_rounds,
            config.blend_top_n)
