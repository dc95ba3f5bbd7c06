"""The apply pipeline: embed listings as a saved candidate needs, then decide their matches.

:func:`apply_candidate` is what ``submit``, ``dedupe``, notebook 06 and the matching service
run on a catalog: the candidate's encoders embed the listings (through the embedding cache,
checked against the model ids the candidate was tuned with), its second stage is loaded, and
its configuration decides (:func:`~shopee_match.match.decision.predict_matches`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.apply.candidates import Candidate
from shopee_match.data.schema import IMAGE_PHASH, POSTING_ID, SOURCE, TITLE
from shopee_match.embed.embeddings import Embeddings
from shopee_match.match.config import MatchConfig
from shopee_match.match.gallery import Gallery
from shopee_match.match.ivf import RECALL_TARGET


def embed_for(postings: pd.DataFrame, config: MatchConfig, cache_dir: str | Path | None = None,
              progress: bool = True, engine: str = "auto", executor=None
              ) -> dict[str, Embeddings]:
    """The embeddings of every modality ``config`` uses, made as it was tuned (the same
    models, checked by identity, int8 title models if it was tuned with them; on
    ``executor``'s cluster when there is one)."""
    from shopee_match.embed.embeddings import embed_dataset

    embeddings = embed_dataset(postings, {m: s for m, s in config.encoders.items()
                                          if m != "tfidf"},
                               modalities=config.modalities, image_size=config.image_size,
                               cache_dir=cache_dir, progress=progress, engine=engine,
                               int8=config.int8, executor=executor)
    for m, e in embeddings.items():
        chosen = config.models.get(m)
        if chosen and chosen != e.model_id:
            raise ValueError(f"The configuration was tuned with {chosen} for {m}, but this "
                             f"environment gives {e.model_id}; re-run the notebook that made "
                             "the candidate.")
    missing = [m for m in config.modalities if m not in embeddings]
    if missing:
        raise ValueError(f"The configuration needs modalities {missing} that these postings "
                         "lack (no images?); choose a candidate made on data like this.")
    return embeddings


def gallery_of(postings: pd.DataFrame, vectors: dict, recall: float = RECALL_TARGET,
               link: str = "auto", executor=None) -> Gallery:
    """The gallery of a catalog's listings: their vectors, photos' phash and titles
    (``recall``: of the search above 200,000 listings, :mod:`shopee_match.match.ivf`), linked
    across its ``source`` column as ``link`` says
    (:func:`~shopee_match.match.sources.link_sources`); searched on ``executor``'s cluster
    when there is one."""
    from shopee_match.match.sources import link_sources

    phash = postings[IMAGE_PHASH].to_numpy() if IMAGE_PHASH in postings else None
    sources = link_sources(postings[SOURCE] if SOURCE in postings else None, link)
    return Gallery(vectors, phash, postings[TITLE].fillna("").astype(str).to_numpy(),
                   recall=recall, sources=sources, executor=executor)


@dataclass
class Applied:
    """A catalog embedded as a candidate needs, with its second stage loaded; the decision
    (:attr:`matches`) is made on first use."""

    postings: pd.DataFrame
    candidate: Candidate
    embeddings: dict[str, Embeddings]
    gallery: Gallery
    scorer: object  # the candidate's second stage (a PairScorer), or None

    @functools.cached_property
    def matches(self):
        """The candidate's ``n x n`` boolean match matrix over the catalog, self included."""
        from shopee_match.match.decision import predict_matches

        return predict_matches(self.gallery, self.candidate.config, self.scorer)

    def match_sets(self) -> pd.Series:
        """``posting_id -> set of posting_ids`` each listing matches (itself included)."""
        from shopee_match.match.matrices import matrix_to_sets

        return matrix_to_sets(self.matches, self.postings[POSTING_ID].astype(str).to_numpy())

    def scored_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(i, j, scores)``: every candidate pair and its second-stage score, exact for the
        pairs the candidate accepts (None for a candidate without a second stage)."""
        from shopee_match.match.decision import scored_pairs

        if self.candidate.config.second_stage is None:
            return None
        pairs, scores = scored_pairs(self.gallery, self.candidate.config, self.scorer)
        return pairs.i, pairs.j, scores


def apply_candidate(postings: pd.DataFrame, candidate: Candidate,
                    cache_dir: str | Path | None = None, progress: bool = True,
                    engine: str = "auto", recall: float = RECALL_TARGET,
                    link: str | None = None, executor=None) -> Applied:
    """Embed ``postings`` as ``candidate`` needs (embeddings cached in ``cache_dir``, default
    ``artifacts/embeddings``; ``engine`` runs the encoders) and load its second stage; a
    catalog above 200,000 listings is searched for ``recall`` of the exact neighbours, and one
    with a ``source`` column linked as ``link`` says (default: as the candidate was tuned).
    With an ``executor`` (:class:`~shopee_match.distributed.executor.RayExecutor`) embedding,
    search and second-stage scoring run on its cluster, with the same results."""
    embeddings = embed_for(postings, candidate.config, cache_dir, progress, engine, executor)
    gallery = gallery_of(postings, {m: e.vectors for m, e in embeddings.items()}, recall,
                         candidate.link if link is None else link, executor)
    gallery.exact_scores = False  # one threshold: pairs that cannot reach it need no scoring
    scorer = candidate.load_scorer()
    if executor is not None and scorer is not None:
        stage = candidate.config.second_stage
        scorer = executor.scorer(stage.kind, candidate.folder / stage.file, scorer)
    return Applied(postings, candidate, embeddings, gallery, scorer)
