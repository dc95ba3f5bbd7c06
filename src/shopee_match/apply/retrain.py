"""Retraining notebook 05's reranker on people's labels, without leaking into its evaluation.

The reranker was fitted on a four-way group split (notebook 05): the cross-encoder on
``train``, its classifier on ``stack`` (pairs the cross-encoder never saw), thresholds on
``val``, figures on ``test``. Labels are routed the same way (:func:`route_labels`): a pair of
two ``train`` postings goes to the cross-encoder, a pair of two ``stack`` postings to the
classifier (its answer replaces the label-group one), and anything naming a ``val`` or
``test`` posting is set aside — kept in the labels file, never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.apply.review import decision_threshold
from shopee_match.train.labels import decided, label_pairs, pair_key


@dataclass
class RoutedLabels:
    """Labels split by where they may be used (see the module docstring)."""

    cross_encoder: pd.DataFrame  # sentence1, sentence2, label: pairs of train postings
    classifier: dict  # pair_key of two stack postings -> 1.0 / 0.0
    set_aside: int  # answers naming a val or test posting (never trained on)
    elsewhere: int  # answers naming postings outside this data, or across splits

    def summary(self) -> dict[str, int]:
        """How many labels went where."""
        return {"cross_encoder": len(self.cross_encoder), "classifier": len(self.classifier),
                "set_aside": self.set_aside, "unusable": self.elsewhere}


def route_labels(answers: pd.DataFrame, posting_ids, split_rows: dict) -> RoutedLabels:
    """Route the same/different answers of ``answers`` (:func:`~shopee_match.train.labels.
    current_labels`) by the split of their two postings (``split_rows``: split -> rows of
    ``posting_ids``)."""
    ids = np.asarray(posting_ids, dtype=object).astype(str)
    split_of = {ids[r]: split for split, rows in split_rows.items() for r in rows}
    chosen = decided(answers)
    first = chosen["posting_id_1"].map(split_of).fillna("")
    second = chosen["posting_id_2"].map(split_of).fillna("")
    held = first.isin(["val", "test"]) | second.isin(["val", "test"])
    to_ce = (first == "train") & (second == "train")
    to_stack = (first == "stack") & (second == "stack")
    same = (chosen["label"] == "same").astype(float)
    ce = pd.DataFrame({"sentence1": chosen["title_1"][to_ce].to_numpy(),
                       "sentence2": chosen["title_2"][to_ce].to_numpy(),
                       "label": same[to_ce].to_numpy()})
    stack = dict(zip(chosen["key"][to_stack], same[to_stack]))
    return RoutedLabels(ce, stack, int(held.sum()),
                        int((~held & ~to_ce & ~to_stack).sum()))


def retrain_reranker(reranker, galleries, config, routed: RoutedLabels, posting_ids,
                     ce_config, seed: int = 0):
    """A new reranker: the cross-encoder trained further (from its own weights and length
    limit, with ``ce_config``'s epochs and learning rate) on the labelled ``train`` pairs, and its
    classifier refitted on the ``stack`` pairs with the new cross-encoder's probabilities and
    the labels people gave there. Without labels for a part, that part is kept as it was.
    Returns ``(reranker, notes)``, or ``(None, notes)`` when the labels changed nothing."""
    from shopee_match.apply.second_stages import Reranker
    from shopee_match.match.decision import candidate_pair_features
    from shopee_match.match.second_stage import PairClassifier
    from shopee_match.train.cross_encoder import rerank_training_data, train_cross_encoder

    notes = {}
    cross_encoder = reranker.cross_encoder
    if routed.cross_encoder["label"].nunique() == 2:
        trained = train_cross_encoder(routed.cross_encoder, replace(
            ce_config, base=str(cross_encoder.folder), seed=seed,
            max_length=cross_encoder.model.max_seq_length))
        cross_encoder = trained.load(int8=cross_encoder.int8)
        notes["cross_encoder"] = f"trained further on {len(routed.cross_encoder)} labelled pairs"
    else:
        notes["cross_encoder"] = "kept (labelled train pairs lack a same or a different one)"
    classifier = reranker.classifier
    if classifier is not None and (routed.classifier or cross_encoder is not
                                   reranker.cross_encoder):
        features, is_match = rerank_training_data(galleries, "stack", config, cross_encoder)
        pairs = candidate_pair_features(galleries.splits["stack"], config)
        ids = np.asarray(posting_ids, dtype=object)[galleries.rows["stack"]]
        said = np.array([routed.classifier.get(pair_key(ids[i], ids[j]), np.nan)
                         for i, j in zip(pairs.i, pairs.j)])
        known = ~np.isnan(said)
        differ = int((said[known] != is_match[known]).sum())
        notes["classifier"] = (f"refitted on the {len(is_match)} stack pair rows (each pair in "
                               f"both directions), {int(known.sum())} of them labelled by "
                               f"people ({differ} answers differ from the label groups)")
        is_match = np.where(known, said == 1.0, is_match)
        classifier = PairClassifier.fit(features, is_match, seed, kind=classifier.kind,
                                        columns=classifier.columns)
    if cross_encoder is reranker.cross_encoder and classifier is reranker.classifier:
        return None, notes
    return Reranker(cross_encoder, classifier, reranker.gray_band), notes


def labelling_curve(galleries, config, cross_encoder, steps, strategy: str = "uncertainty",
                    seed: int = 0, random_share: float = 0.2, grid=None) -> pd.DataFrame:
    """What labels buy, simulated: the ``stack`` split's candidate pairs are the pool, their
    label groups the oracle. After each number of labels in ``steps`` (chosen by
    ``strategy``, :func:`~shopee_match.train.active.simulate_labelling`) a pair classifier
    over the pair features (and ``cross_encoder``'s probability, when there is one) is fitted
    on the labels alone, its threshold chosen on val, and test read once: row-wise F1 and the
    precision / recall of accepted test pairs. Without labels of both kinds the cross-encoder
    alone (or, without one, ``config``'s own rule) decides."""
    from shopee_match.apply.second_stages import Reranker
    from shopee_match.match.config import SecondStage
    from shopee_match.match.decision import candidate_pair_features, decide
    from shopee_match.match.second_stage import PairClassifier
    from shopee_match.match.selection import tune
    from shopee_match.train.active import simulate_labelling
    from shopee_match.train.cross_encoder import rerank_training_data

    grid = list(np.linspace(0.02, 0.98, 25) if grid is None else grid)
    if cross_encoder is not None:
        features, truth = rerank_training_data(galleries, "stack", config, cross_encoder)
    else:
        features, truth = galleries.pair_training_data("stack", config)
    pairs = candidate_pair_features(galleries.splits["stack"], config)
    once = ~pd.Series(list(zip(np.minimum(pairs.i, pairs.j), np.maximum(pairs.i, pairs.j)))
                      ).duplicated().to_numpy()  # each pair once, not in both directions
    features, truth = features[once].reset_index(drop=True), truth[once]
    kind = "rerank" if cross_encoder is not None else "pair_classifier"
    if cross_encoder is None:  # the configuration's own score and verdict of each pair
        own = galleries.pair_scores(config, "stack")[0][once]
        accepted = np.asarray(decide(galleries.splits["stack"], config)[pairs.i, pairs.j]
                              ).ravel()[once].astype(bool)

    def fit_and_score(labelled):
        answers = truth[labelled]
        if answers.any() and (~answers).any():
            classifier = PairClassifier.fit(features.iloc[labelled], answers, seed)
            scorer = Reranker(cross_encoder, classifier) if cross_encoder else classifier
            pool_scores = classifier.probabilities(features)
            tuned = tune(galleries.evaluator(scorer), config, "second_stage",
                         [SecondStage(kind, t, "second_stage") for t in grid])
        elif cross_encoder is not None:
            scorer = Reranker(cross_encoder).cross_encoder_only()
            pool_scores = features["cross_encoder"].to_numpy()
            tuned = tune(galleries.evaluator(scorer), config, "second_stage",
                         [SecondStage("cross_encoder", t, "second_stage") for t in grid])
        else:  # no cross-encoder: the configuration's own rule
            scorer, tuned = None, tune(galleries.evaluator(), config, "strategy",
                                       [config.strategy])
            pool_scores = own
        stage = tuned.config.second_stage
        threshold = stage.threshold if stage else decision_threshold(config, own, accepted)
        test = galleries.scores(tuned.config, "test", scorer)
        return pool_scores, threshold, {
            "val F1": tuned.val_f1, "test row F1": test["row_f1"],
            "test pair precision": test["pair_precision"],
            "test pair recall": test["pair_recall"], "test pair F1": test["pair_f1"]}

    return simulate_labelling(len(truth), fit_and_score, steps, strategy, random_share, seed)


def corrected_groups(labels, answers: pd.DataFrame, posting_ids, rows) -> tuple[np.ndarray, dict]:
    """Label groups with people's answers on pairs of two postings of ``rows`` applied: a
    ``same`` answer joins the two groups. A ``different`` answer inside one group cannot say
    which of the two is misplaced: it is counted (``conflicts``), the group left as it is."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = np.asarray(labels)
    codes, groups = np.unique(labels, return_inverse=True)
    ids = np.asarray(posting_ids, dtype=object)
    a, b, said = label_pairs(answers, ids)
    inside = np.isin(a, rows) & np.isin(b, rows)
    a, b, said = a[inside], b[inside], said[inside]
    same = said == 1.0
    n = len(codes)
    joins = coo_matrix((np.ones(int(same.sum())), (groups[a[same]], groups[b[same]])), (n, n))
    _, merged = connected_components(joins, directed=False)
    notes = {"joined": int((groups[a[same]] != groups[b[same]]).sum()),
             "conflicts": int(((~same) & (groups[a] == groups[b])).sum())}
    return merged[groups], notes


def retrain_head(candidate, data, answers: pd.DataFrame, thresholds=None, progress=False):
    """Notebook 04's projection head of ``candidate`` trained again, as it was (same loss,
    sizes, epochs, inputs), on label groups corrected by the ``answers`` on pairs of two
    ``train`` postings of 04's split (:func:`corrected_groups`); the new head's vectors
    replace the old ones and a static threshold is chosen on val again. ``data`` is the
    :class:`~shopee_match.apply.tuning.TuningSet` of the candidate's encoders. Returns
    ``(tuned, notes)``, or None when the candidate decides without a head (or its second stage
    decides)."""
    from shopee_match.data.splits import split_by_group
    from shopee_match.embed.finetuned import read_meta
    from shopee_match.embed.specs import EncoderSpec
    from shopee_match.match.selection import tune
    from shopee_match.train.finetune import TrainConfig, train_head
    from shopee_match.train.labels import labels_digest

    config = candidate.config
    if config.second_stage is not None:  # a head there only blocks: its second stage decides
        return None

    def kind(spec):
        location = EncoderSpec.parse(spec).location
        meta = read_meta(location) if location and Path(location).is_dir() else None
        return meta and meta.get("kind")

    head = next((m for m in config.modalities if kind(config.encoders[m]) == "head"), None)
    if head is None:
        return None
    meta = read_meta(EncoderSpec.parse(config.encoders[head]).location)
    split = split_by_group(data.labels, (0.7, 0.15, 0.15), seed=candidate.split_seed)
    groups, notes = corrected_groups(data.labels, answers, data.postings["posting_id"],
                                     np.flatnonzero(split == "train"))
    inputs = meta["inputs"]
    for modality, spec in inputs.items():
        if modality not in data.embeddings:
            data.add(modality, spec, progress=progress)
    train_config = TrainConfig(**{**meta["config"], "margin": tuple(meta["config"]["margin"])})
    trained = train_head({m: data.vectors[m] for m in inputs}, groups, split, train_config,
                         inputs, meta["image_size"],
                         f"{candidate.fingerprint}+labels-{labels_digest(answers)}",
                         candidate.split_seed, k=config.k, progress=progress,
                         int8=bool(meta.get("int8")))
    data.add(head, trained.spec, progress=progress)
    new = config.replace(encoders={**config.encoders, head: trained.spec},
                         models={**config.models, head: data.models[head]})
    galleries = data.galleries(candidate.split_seed, link=candidate.link,
                               metric=candidate.metric)
    grid = list(np.linspace(0.05, 0.99, 48) if thresholds is None else thresholds)
    tuned = (tune(galleries.evaluator(), new, "value", grid) if new.strategy == "static"
             else tune(galleries.evaluator(), new, "strategy", [new.strategy]))
    notes["head"] = (f"{head}: trained again on the corrected groups (best val F1 "
                     f"{trained.history.best_val_f1:.4f} at epoch "
                     f"{trained.history.best_epoch + 1})")
    return tuned, notes


def retrain_candidate(candidate, scorer, data, galleries, answers: pd.DataFrame, ce_config,
                      grid_points: int = 48):
    """Train again what in ``candidate`` learns from labels: notebook 05's reranker
    (``scorer``; :func:`route_labels`, :func:`retrain_reranker`, its threshold chosen on val
    again) or notebook 04's projection head (:func:`retrain_head`). Returns
    ``(tuned, files, notes)`` for :func:`~shopee_match.apply.candidates.save_version`, with
    ``tuned`` None when nothing was retrained (``notes`` say why)."""
    from shopee_match.apply.second_stages import Reranker
    from shopee_match.match.config import SecondStage
    from shopee_match.match.selection import tune

    config = candidate.config
    if isinstance(scorer, Reranker):
        ids = data.postings["posting_id"]
        routed = route_labels(answers, ids, galleries.rows)
        retrained, notes = retrain_reranker(scorer, galleries, config, routed, ids, ce_config,
                                            candidate.split_seed)
        if retrained is None:
            return None, {}, notes
        stage = config.second_stage
        tuned = tune(galleries.evaluator(retrained), config, "second_stage",
                     [SecondStage(stage.kind, t, stage.file)
                      for t in np.linspace(0.02, 0.98, grid_points)])
        return tuned, {stage.file: retrained}, notes
    head = retrain_head(candidate, data, answers, np.linspace(0.05, 0.99, grid_points))
    if head is None:
        return None, {}, {"candidate": f"{candidate.name} has no cross-encoder, classifier or "
                          "projection head that learns from labels (notebooks 04 and 05 save "
                          "those): the labels stay in the file"}
    tuned, notes = head
    return tuned, {}, notes
