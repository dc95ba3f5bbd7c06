"""The second stages a candidate can carry, saved in its folder and loaded by kind.

Each implements :class:`~shopee_match.match.second_stage.PairScorer` (one score per candidate
pair) and is saved with ``save(path)`` and read back with ``load(path)``:

- ``pair_classifier``: :class:`~shopee_match.match.second_stage.PairClassifier` (a file);
- ``cross_encoder`` and ``rerank``: :class:`Reranker` (a folder), the cross-encoder's
  probability alone or a classifier over the pair features plus that probability.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shopee_match.embed.cross_encoder import CrossEncoderModel
from shopee_match.match.pairs import with_ce
from shopee_match.match.second_stage import CandidatePairs, PairClassifier, PairScorer


class Reranker:
    """A cross-encoder, alone (the ``cross_encoder`` kind) or with a ``classifier`` over the
    pair features plus its probability (``rerank``). ``gray_band`` is the band of the
    cross-encoder's probability notebook 05 chose on val for labelling (the service logs
    requests in it).

    Saved as a folder: ``model/`` (the cross-encoder), ``cross_encoder.json`` (how it scores:
    ``int8`` or not, so it scores everywhere as it was tuned), ``classifier.joblib`` when
    there is a classifier, ``gray_band.json`` when there is a band."""

    def __init__(self, cross_encoder: CrossEncoderModel, classifier: PairClassifier | None = None,
                 gray_band: tuple[float, float] | None = None):
        self.cross_encoder = cross_encoder
        self.classifier = classifier
        self.gray_band = gray_band
        self.skipped = 0  # pairs decided without the cross-encoder (see score)

    @classmethod
    def load(cls, folder: str | Path, engine: str = "auto") -> Reranker:
        """A reranker saved with :meth:`save` (``engine`` runs its cross-encoder)."""
        folder = Path(folder)
        classifier = folder / "classifier.joblib"
        band = folder / "gray_band.json"
        saved = json.loads(band.read_text()) if band.is_file() else None
        scoring = folder / "cross_encoder.json"
        int8 = bool(json.loads(scoring.read_text()).get("int8")) if scoring.is_file() else False
        return cls(CrossEncoderModel(folder / "model", engine=engine, int8=int8),
                   PairClassifier.load(classifier) if classifier.is_file() else None,
                   (float(saved["low"]), float(saved["high"])) if saved else None)

    def save(self, folder: str | Path) -> Path:
        """Write ``model/``, ``cross_encoder.json``, ``classifier.joblib`` and
        ``gray_band.json`` (those it has)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.cross_encoder.save(folder / "model")
        (folder / "cross_encoder.json").write_text(json.dumps({"int8": self.cross_encoder.int8}))
        if self.classifier is not None:
            self.classifier.save(folder / "classifier.joblib")
        if self.gray_band is not None:
            low, high = self.gray_band
            (folder / "gray_band.json").write_text(json.dumps(
                {"low": float(low), "high": float(high), "on": "cross_encoder"}))
        return folder

    def cross_encoder_only(self) -> Reranker:
        """This reranker without its classifier (the ``cross_encoder`` kind), sharing the
        loaded cross-encoder."""
        return Reranker(self.cross_encoder, None, self.gray_band)

    def parts(self, pairs: CandidatePairs, scored_only: bool = False) -> dict[str, np.ndarray]:
        """The cross-encoder's probability of each pair (scored once per gallery; with
        ``scored_only`` those scored already, NaN for pairs :meth:`score` skipped)."""
        gallery = pairs.gallery
        if gallery.titles is None:
            raise ValueError("the cross-encoder reads titles: give the gallery its titles")
        return {"cross_encoder": self.cross_encoder.pair_scores(
            gallery.titles, pairs.i, pairs.j, gallery.cache, gallery.order,
            scored_only=scored_only)}

    def score(self, pairs: CandidatePairs, accept_at: float | None = None) -> np.ndarray:
        """The cross-encoder's probability, or the classifier's over the pair features plus
        that probability. With ``accept_at``, a pair the classifier rejects whatever the
        cross-encoder says (its score below ``accept_at`` with the probability at 0 and at 1:
        the classifier is monotone in it) is not cross-encoded and gets that bound instead;
        ``skipped`` counts such pairs."""
        if self.classifier is None or accept_at is None:
            ce = self.parts(pairs)["cross_encoder"]
            return ce if self.classifier is None else self.classifier.probabilities(
                with_ce(pairs.features, ce))
        bound = np.maximum(*(self.classifier.probabilities(with_ce(
            pairs.features, np.full(len(pairs), end, np.float32))) for end in (0.0, 1.0)))
        open_ = bound >= accept_at
        self.skipped += int((~open_).sum())
        scores = bound.copy()
        if open_.any():
            part = CandidatePairs(pairs.gallery, pairs.i[open_], pairs.j[open_],
                                  pairs.features[open_])
            ce = self.parts(part)["cross_encoder"]
            scores[open_] = self.classifier.probabilities(with_ce(part.features, ce))
        return scores


#: how each kind of second stage is read from a candidate folder
LOADERS = {"pair_classifier": PairClassifier.load, "cross_encoder": Reranker.load,
           "rerank": Reranker.load}


def load_second_stage(kind: str, path: str | Path) -> PairScorer:
    """The second stage of ``kind`` saved at ``path``."""
    return LOADERS[kind](path)
