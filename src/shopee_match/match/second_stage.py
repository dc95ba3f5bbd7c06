"""Second stages: anything that gives one score per candidate pair.

A :class:`~shopee_match.match.config.MatchConfig` with a ``second_stage`` accepts a listing's
neighbour when its pair scores at least the stage's threshold. The decision asks a
:class:`PairScorer` for the scores of a gallery's :class:`CandidatePairs` and checks that it
gave one finite score per pair (:func:`score_pairs`). The kit has two: the
:class:`PairClassifier` here, over the pair features, and the reranker of notebook 05
(:class:`shopee_match.apply.second_stages.Reranker`: a cross-encoder, alone or with a
classifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

#: pairs per chunk in :meth:`PairClassifier.probabilities`
SCORE_CHUNK = 262_144


@dataclass
class CandidatePairs:
    """One gallery's candidate pairs: row ``i[t]`` with its neighbour ``j[t]`` (rows of
    ``gallery``), and the pair features (:func:`~shopee_match.match.pairs.pair_features`)."""

    gallery: object  # a shopee_match.match.gallery.Gallery
    i: np.ndarray
    j: np.ndarray
    features: pd.DataFrame

    def __len__(self) -> int:
        return len(self.i)


class PairScorer(Protocol):
    """A second stage: one score per candidate pair, higher = more likely the same product."""

    def score(self, pairs: CandidatePairs, accept_at: float | None = None) -> np.ndarray:
        """Score of each pair of ``pairs``. With ``accept_at`` (the one threshold the scores
        will be compared with), a pair that cannot reach it may get any score below it
        instead: the work of scoring it exactly is skipped, the decision is the same."""

    def parts(self, pairs: CandidatePairs, scored_only: bool = False) -> dict[str, np.ndarray]:
        """Scores the second stage is made of, shown beside its own (e.g. ``cross_encoder``);
        empty when it has none. ``scored_only``: those :meth:`score` computed for these pairs'
        gallery, NaN where it skipped them (``accept_at``), none computed anew."""


def score_pairs(scorer: PairScorer | None, pairs: CandidatePairs, kind: str = "second stage",
                accept_at: float | None = None) -> np.ndarray:
    """``scorer``'s score of each pair (see :meth:`PairScorer.score` for ``accept_at``),
    checked: one finite number per pair."""
    if scorer is None:
        raise ValueError(f"this configuration needs its fitted {kind}; load the candidate's "
                         "second stage (Candidate.load_scorer()) and pass it")
    if len(pairs) == 0:  # e.g. a one-listing test set: no pairs to score
        return np.zeros(0)
    scores = np.asarray(scorer.score(pairs, accept_at))  # its own float type: compared in it
    if (scores.shape != (len(pairs),) or not np.issubdtype(scores.dtype, np.floating)
            or not np.isfinite(scores).all()):
        raise ValueError(f"{type(scorer).__name__} gave scores of shape {scores.shape} and "
                         f"type {scores.dtype} for {len(pairs)} candidate pairs; a second stage "
                         "must give one finite float score per pair")
    return scores


class PairClassifier:
    """A classifier of candidate pairs from their features (a scikit-learn pipeline), saved
    with joblib; its score is the match probability. ``logistic``: logistic regression on
    standardised features; ``boosted``: gradient-boosted trees (scikit-learn's
    histogram GBDT, the LightGBM algorithm), which Shopee's 2nd and 3rd places used for pairs.
    The features it reads are kept by name with the model."""

    KINDS = ("logistic", "boosted")

    def __init__(self, model):
        self.model = model

    @classmethod
    def fit(cls, features: pd.DataFrame, is_match: np.ndarray, seed: int = 0,
            kind: str = "logistic", columns: list[str] | None = None) -> PairClassifier:
        """Fit on pair features (``columns`` of them, default all) and whether each pair is a
        match (both kinds needed)."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if kind not in cls.KINDS:
            raise ValueError(f"kind must be one of {cls.KINDS}, not {kind!r}")
        if len(np.unique(is_match)) < 2:
            raise ValueError("the pair classifier needs matching and non-matching candidate "
                             "pairs")
        if kind == "logistic":
            model = make_pipeline(StandardScaler(),
                                  LogisticRegression(max_iter=1000, random_state=seed))
        chosen = features if columns is None else features[list(columns)]
        if kind == "boosted":  # rising in the cross-encoder's probability, as the logistic
            # model is: the reranker relies on it to skip pairs no probability could accept
            rising = {"cross_encoder": 1} if "cross_encoder" in chosen else None
            model = make_pipeline(HistGradientBoostingClassifier(
                max_iter=200, learning_rate=0.1, max_leaf_nodes=15, l2_regularization=1.0,
                early_stopping=False, random_state=seed, monotonic_cst=rising))
        return cls(model.fit(chosen, np.asarray(is_match, dtype=bool)))

    @property
    def kind(self) -> str:
        """``boosted`` (gradient-boosted trees) or ``logistic``."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        return ("boosted" if isinstance(self.model[-1], HistGradientBoostingClassifier)
                else "logistic")

    @property
    def columns(self) -> list[str] | None:
        """The feature names it reads (None for a model saved before they were kept)."""
        names = getattr(self.model, "feature_names_in_", None)
        return None if names is None else list(names)

    def _matrix(self, features: pd.DataFrame):
        """What the model reads: its columns by name, or (a model saved before names were
        kept) the features without the title ones, by position, as it was fitted then."""
        if self.columns is not None:
            return features[self.columns]
        from shopee_match.match.pairs import TITLE_FEATURES

        return features.drop(columns=[c for c in TITLE_FEATURES if c in features]).to_numpy()

    def probabilities(self, features: pd.DataFrame) -> np.ndarray:
        """Match probability of every row of ``features``, scored in chunks of
        :data:`SCORE_CHUNK` pairs: the float64 matrix the pipeline is given and its scaler's
        copy of it are made a chunk at a time, not for millions of pairs at once."""
        out = np.empty(len(features))
        table = self._matrix(features)
        for lo in range(0, len(table), SCORE_CHUNK):
            chunk = table[lo:lo + SCORE_CHUNK]
            out[lo:lo + len(chunk)] = self.model.predict_proba(chunk)[:, 1]
        return out

    def coefficients(self, columns=None) -> pd.Series:
        """The logistic regression's weight of each (standardised) feature."""
        if not hasattr(self.model[-1], "coef_"):
            raise ValueError("only a logistic pair classifier has coefficients")
        return pd.Series(self.model[-1].coef_[0],
                         index=self.columns if columns is None else list(columns))

    def score(self, pairs: CandidatePairs, accept_at: float | None = None) -> np.ndarray:
        return self.probabilities(pairs.features)

    def parts(self, pairs: CandidatePairs, scored_only: bool = False) -> dict[str, np.ndarray]:
        return {}

    def save(self, path: str | Path) -> Path:
        """Write the fitted pipeline with joblib."""
        import joblib

        joblib.dump(self.model, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PairClassifier:
        """A classifier written by :meth:`save`."""
        import joblib

        return cls(joblib.load(path))
