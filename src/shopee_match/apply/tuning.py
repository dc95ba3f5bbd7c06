"""Tuning set-up: a labelled dataset loaded, checked, embedded and split, as notebooks 03-05
start from it, and the quick fallback candidate tuned on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopee_match.apply.candidates import Candidate, utc_now
from shopee_match.data.schema import IMAGE_PHASH, LABEL_GROUP, SOURCE, TITLE
from shopee_match.embed.embeddings import INT8_TITLES, Embeddings
from shopee_match.match.config import MatchConfig
from shopee_match.match.selection import Galleries


@dataclass
class TuningSet:
    """A labelled dataset and its embeddings: every modality embedded (``encoders``: its
    spec; ``int8``: title models as int8 graphs), ready to be split into galleries and
    matched by configurations built from it."""

    dataset: str
    postings: pd.DataFrame
    embeddings: dict[str, Embeddings]
    encoders: dict[str, str]
    image_size: int
    int8: bool = False

    @property
    def labels(self) -> np.ndarray:
        return self.postings[LABEL_GROUP].to_numpy()

    @property
    def fingerprint(self) -> str:
        """The dataset's fingerprint (candidates made from it carry it)."""
        from shopee_match.data.datasets import dataset_fingerprint

        return dataset_fingerprint(self.postings)

    @property
    def vectors(self) -> dict:
        return {m: e.vectors for m, e in self.embeddings.items()}

    @property
    def models(self) -> dict[str, str]:
        """Model id of each embedded modality (recorded in configurations, checked on use)."""
        return {m: e.model_id for m, e in self.embeddings.items()}

    @property
    def dense(self) -> list[str]:
        """The modalities with dense vectors (all but ``tfidf``), which fusion combines."""
        return [m for m in self.embeddings if m != "tfidf"]

    def add(self, modality: str, spec: str, engine: str = "auto", progress: bool = True
            ) -> Embeddings:
        """Embed one more modality with ``spec`` (e.g. an encoder fine-tuned on this data)."""
        from shopee_match.embed.embeddings import embed_dataset

        self.embeddings[modality] = embed_dataset(self.postings, {modality: spec},
                                                  modalities=[modality], engine=engine,
                                                  progress=progress, int8=self.int8)[modality]
        self.encoders[modality] = spec
        return self.embeddings[modality]

    def galleries(self, split_seed: int = 0, fractions=(0.7, 0.15, 0.15), names=None,
                  modalities: list[str] | None = None, link: str = "auto",
                  metric: str = "row_f1") -> Galleries:
        """The listings split by label group into galleries (:class:`Galleries`), with their
        vectors (of ``modalities``, default all), photos' phash and titles; linked across
        sources as ``link`` says (:func:`~shopee_match.match.sources.link_sources`), every
        choice made on ``metric``. TF-IDF is fitted on each split's titles, as ``submit`` fits
        it on the listings it matches, so a split is decided as ``submit`` would decide it."""
        from shopee_match.match.sources import link_sources

        vectors = self.vectors if modalities is None else {m: self.vectors[m]
                                                           for m in modalities}
        phash = self.postings[IMAGE_PHASH].to_numpy() if IMAGE_PHASH in self.postings else None
        sources = self.postings[SOURCE] if SOURCE in self.postings else None
        titles = self.postings[TITLE].to_numpy()
        galleries = Galleries(vectors, self.labels, phash, split_seed, fractions, titles, names,
                              link_sources(sources, link), metric)
        if "tfidf" in vectors:  # fitted on each split's own titles, as submit fits a test set's
            from shopee_match.embed.tfidf import tfidf_vectors

            for split, rows in galleries.rows.items():
                galleries.splits[split].vectors["tfidf"] = tfidf_vectors(list(titles[rows]))
        return galleries

    def config(self, fusion_weights: dict[str, float], k: int, value: float = 0.5,
               **fields) -> MatchConfig:
        """A matcher configuration over this set's encoders (and their model ids)."""
        return MatchConfig(encoders=dict(self.encoders), fusion_weights=fusion_weights, k=k,
                           image_size=self.image_size, value=value, models=self.models,
                           int8=self.int8, **fields)


def prepare_tuning(dataset: str, encoders: str | dict = "offline", image_size: int = 224,
                   columns: str | dict | None = None, engine: str = "auto",
                   progress: bool = True, int8: bool = INT8_TITLES) -> TuningSet:
    """Load a labelled dataset (stopping with a clear message when it has nothing to match),
    embed every modality of ``encoders`` (a model profile, or a dict of specs; ``int8``: title
    models as int8 graphs) and TF-IDF."""
    from shopee_match.data.datasets import load_dataset
    from shopee_match.data.postings import require_duplicates
    from shopee_match.embed.embeddings import embed_dataset, resolve_profile

    postings, _ = load_dataset(dataset, "train", columns=columns)
    require_duplicates(postings, dataset)
    specs = {m: s for m, s in resolve_profile(encoders).items() if m != "tfidf"}
    embeddings = embed_dataset(postings, specs, image_size=image_size, engine=engine,
                               progress=progress, int8=int8)
    specs["tfidf"] = "tfidf"
    return TuningSet(dataset, postings, embeddings, {m: specs[m] for m in embeddings},
                     image_size, int8)


def quick_candidate(dataset: str, profile: str = "offline", image_size: int = 224,
                    split_seed: int = 0, k: int = 50, columns: str | dict | None = None
                    ) -> Candidate:
    """An unsaved fallback when no notebook saved a candidate: equal-weight fusion of the
    dense modalities with the static threshold chosen on val (fair test F1 alongside)."""
    from shopee_match.match.selection import tune

    data = prepare_tuning(dataset, profile, image_size, columns)
    galleries = data.galleries(split_seed, modalities=data.dense)
    base = data.config({m: 1.0 for m in data.dense}, k)
    tuned = tune(galleries.evaluator(), base, "value", list(np.linspace(0.3, 0.98, 69)))
    return Candidate("quick-fallback", tuned.config, tuned.val_f1, tuned.test_f1, dataset,
                     data.fingerprint, split_seed, "quick_candidate", utc_now(),
                     tuned.test_f1_upper)
