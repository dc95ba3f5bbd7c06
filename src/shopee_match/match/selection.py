"""The selection protocol: every choice made on val, test reported once.

Label groups are split 70/15/15 into train / val / test (:class:`Galleries`);
each split is matched only within itself, as a test set is at submission time.
A knob is tuned by evaluating each value on val and picking the best (the first
of equal values); the test F1 at that value is the *fair* figure, and the best
test F1 over all values is shown only as an upper bound (:func:`tune`). An
:class:`Ablation` adds one step at a time, keeps a step only if it raised val
F1, and reports each step's test gain against the last kept row.

The functions take an ``evaluate(config, split) -> F1`` callable, so the
protocol can be checked with any evaluator; :meth:`Galleries.evaluate` is the
real one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shopee_match.match.config import MatchConfig
from shopee_match.match.gallery import Gallery

Evaluate = Callable[[MatchConfig, str], float]
#: what a choice can be made on (:class:`Galleries`)
METRICS = ("row_f1", "pair_f1")


@dataclass(frozen=True)
class Choice:
    """The option chosen on val: its index, val F1, fair test F1 and the test-tuned bound."""

    index: int
    val_f1: float
    test_f1: float | None
    test_f1_upper: float | None


def choose(val_f1: Sequence[float], test_f1: Sequence[float] | None = None) -> Choice:
    """Pick the option with the best val F1 (the first of equal ones); test F1 is only read."""
    val_f1 = np.asarray(val_f1, dtype=float)
    if val_f1.size == 0:
        raise ValueError("nothing to choose from: no options were evaluated")
    best = int(np.argmax(val_f1))
    if test_f1 is None:
        return Choice(best, float(val_f1[best]), None, None)
    test_f1 = np.asarray(test_f1, dtype=float)
    if test_f1.shape != val_f1.shape:
        raise ValueError(f"{len(val_f1)} val scores but {len(test_f1)} test scores")
    return Choice(best, float(val_f1[best]), float(test_f1[best]), float(test_f1.max()))


@dataclass(frozen=True)
class Tuned:
    """A configuration chosen on val with its val F1, fair test F1 and test-tuned bound."""

    config: MatchConfig | None
    val_f1: float
    test_f1: float
    test_f1_upper: float


def choose_config(evaluate: Evaluate, configs: Sequence[MatchConfig]) -> Tuned:
    """Evaluate ``configs`` on val and test; return the one with the best val F1."""
    val_f1 = [evaluate(c, "val") for c in configs]
    test_f1 = [evaluate(c, "test") for c in configs]
    pick = choose(val_f1, test_f1)
    return Tuned(configs[pick.index], pick.val_f1, pick.test_f1, pick.test_f1_upper)


def tune(evaluate: Evaluate, base: MatchConfig, knob: str, values: Sequence[Any]) -> Tuned:
    """Tune one field of ``base`` over ``values`` on val (see :func:`choose_config`)."""
    return choose_config(evaluate, [base.replace(**{knob: v}) for v in values])


def best_of(tried: Sequence[Tuned]) -> Tuned:
    """The :class:`Tuned` with the best val F1 (the first of equal ones)."""
    return tried[choose([t.val_f1 for t in tried]).index]


def choose_on_sweeps(values: Sequence[float], val_table: pd.DataFrame,
                     test_table: pd.DataFrame) -> tuple[float, Choice]:
    """The value of a threshold sweep (:func:`~shopee_match.match.thresholds.sweep`) chosen
    on val."""
    pick = choose(val_table["f1"], test_table["f1"])
    return float(values[pick.index]), pick


class Ablation:
    """Steps added one at a time; a step is kept for the next rows only if it raised val F1."""

    def __init__(self):
        self.rows: list[dict[str, Any]] = []
        self.kept: Tuned | None = None

    def add(self, step: str, tuned: Tuned, kept: bool) -> bool:
        """Append a row; ``kept`` makes it the base of the following steps."""
        self.rows.append({"step": step, "tuned": tuned, "kept": bool(kept)})
        if kept:
            self.kept = tuned
        return bool(kept)

    def try_step(self, step: str, tuned: Tuned) -> bool:
        """Add a step, kept only if its val F1 beats the last kept row's (or none was kept)."""
        return self.add(step, tuned, self.kept is None or tuned.val_f1 > self.kept.val_f1)

    @property
    def config(self) -> MatchConfig | None:
        """The configuration of the last kept row (the base for the next step)."""
        return None if self.kept is None else self.kept.config

    def table(self) -> pd.DataFrame:
        """One row per step: val F1, fair test F1, test-tuned bound, kept, gain vs last kept."""
        out, last_kept = [], None
        for row in self.rows:
            t = row["tuned"]
            out.append({"step": row["step"], "val F1": t.val_f1, "test F1 (fair)": t.test_f1,
                        "test F1 (tuned on test)": t.test_f1_upper, "kept": row["kept"],
                        "gain vs last kept (test, fair)":
                            np.nan if last_kept is None else t.test_f1 - last_kept})
            if row["kept"]:
                last_kept = t.test_f1
        return pd.DataFrame(out).set_index("step")

    def best(self) -> tuple[str, Tuned]:
        """Step name and result with the best val F1 among rows with a configuration."""
        usable = [row for row in self.rows if row["tuned"].config is not None]
        if not usable:
            raise ValueError("no ablation row has a usable configuration")
        row = usable[choose([r["tuned"].val_f1 for r in usable]).index]
        return row["step"], row["tuned"]


class Galleries:
    """One dataset's listings split by label group into galleries, one per split, each matched
    only within itself (as a test set is at submission time).

    ``splits`` maps each split name to its :class:`~shopee_match.match.gallery.Gallery`,
    ``rows`` to its rows in the dataset and ``labels`` to their label groups. ``fractions``
    and ``names`` choose the splits (default train/val/test, 70/15/15 of the listings).
    ``sources`` (a code per listing, :func:`~shopee_match.match.sources.link_sources`) links
    across sources: listings are searched among the other sources' and only pairs across
    sources count. ``metric`` is what every choice is made on: ``"row_f1"`` (Kaggle's mean
    row-wise F1) or ``"pair_f1"`` (F1 over the pairs in scope, as entity matching reports).
    """

    def __init__(self, vectors: dict, labels, phash=None, split_seed: int = 0,
                 fractions=(0.7, 0.15, 0.15), titles=None, names=None, sources=None,
                 metric: str = "row_f1"):
        from shopee_match.data.splits import SPLIT_NAMES, split_by_group

        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
        labels = np.asarray(labels)
        names = tuple(names or SPLIT_NAMES)
        split = split_by_group(labels, fractions, seed=split_seed, names=names)
        whole = Gallery(vectors, phash, titles, sources=sources)
        self.split_seed = split_seed
        self.metric = metric
        self.rows = {s: np.flatnonzero(split == s) for s in names}
        self.labels = {s: labels[r] for s, r in self.rows.items()}
        self.splits = {s: whole.take(r) for s, r in self.rows.items()}

    @property
    def sources(self) -> dict:
        """Each split's source codes (None where pairs are not linked across sources)."""
        return {s: gallery.sources for s, gallery in self.splits.items()}

    def sizes(self) -> pd.DataFrame:
        """Listings and label groups per split."""
        return pd.DataFrame({s: {"listings": len(r), "groups": len(np.unique(self.labels[s]))}
                             for s, r in self.rows.items()})

    def neighbors(self, split: str, weights: dict[str, float], k: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Cached self-search lists (``k`` others + self) of the fused ``weights`` in a split."""
        return self.splits[split].neighbors(weights, k + 1)

    def sweep(self, split: str, weights: dict[str, float], k: int, values: Sequence[float],
              strategy: str = "static") -> pd.DataFrame:
        """A threshold strategy over ``values`` on one split's fused neighbours: ``f1`` is the
        chosen metric, beside ``row_f1`` and the pair precision, recall and F1."""
        from shopee_match.match.thresholds import sweep

        table = sweep(*self.neighbors(split, weights, k), self.labels[split], values, strategy,
                      self.sources[split])
        table.insert(1, "row_f1", table["f1"])
        table["f1"] = table[self.metric]
        return table

    def predict(self, config: MatchConfig, split: str, scorer=None):
        """Match matrix of one split under ``config`` (``scorer``: its fitted second stage)."""
        from shopee_match.match.decision import predict_matches

        return predict_matches(self.splits[split], config, scorer)

    def evaluate(self, config: MatchConfig, split: str, scorer=None) -> float:
        """The chosen metric (mean row-wise F1, or pair F1) of ``config`` on one split (only
        it: every knob's every value is evaluated)."""
        from shopee_match.match.metrics import matrix_pair_scores, matrix_row_f1

        matches = self.predict(config, split, scorer)
        labels, sources = self.labels[split], self.sources[split]
        if self.metric == "pair_f1":
            return matrix_pair_scores(matches, labels, sources)["f1"]
        return float(matrix_row_f1(matches, labels, sources).mean())

    def scores(self, config: MatchConfig, split: str, scorer=None) -> dict[str, float]:
        """Every metric of ``config`` on one split: mean row-wise F1, pair precision / recall /
        F1 over the pairs in scope, B-cubed precision / recall / F1 of the clusters its
        matches join into, and the share of true pairs split across those clusters."""
        from shopee_match.match.metrics import (
            bcubed,
            matrix_pair_scores,
            matrix_row_f1,
            split_true_pairs,
        )
        from shopee_match.match.sources import drop_within_source

        matches = self.predict(config, split, scorer)
        labels, sources = self.labels[split], self.sources[split]
        pairs = matrix_pair_scores(matches, labels, sources)
        clusters = _clusters(drop_within_source(matches, sources))
        cubed = bcubed(clusters, labels)
        return {"row_f1": float(matrix_row_f1(matches, labels, sources).mean()),
                "pair_precision": pairs["precision"], "pair_recall": pairs["recall"],
                "pair_f1": pairs["f1"], "bcubed_precision": cubed["precision"],
                "bcubed_recall": cubed["recall"], "bcubed_f1": cubed["f1"],
                "true_pairs_split": split_true_pairs(clusters, labels, sources)}

    def evaluator(self, scorer=None) -> Evaluate:
        """``evaluate(config, split)`` with a fixed second stage."""
        return lambda config, split: self.evaluate(config, split, scorer)

    def pair_scores(self, config: MatchConfig, split: str, scorer=None, unordered: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, is_match)`` of one split's candidate pairs as ``config`` scores them: its
        second stage's score (``scorer``), or the fused similarity its threshold reads. With
        ``unordered`` each pair once, with its higher score (:func:`unordered_pair_scores`)."""
        from shopee_match.match.metrics import unordered_pair_scores

        pairs, scores = self._scored_candidates(config, split, scorer)
        labels = self.labels[split]
        is_match = labels[pairs.i] == labels[pairs.j]
        if unordered:
            return unordered_pair_scores(pairs.i, pairs.j, scores, is_match)
        return scores, is_match

    def one_to_one_pairs(self, config: MatchConfig, split: str, scorer=None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, is_match)`` of the pairs that ``config`` accepts one-to-one, as ``link
        --one-to-one`` does: each unordered pair once (its higher score, accepted from either
        side), kept when it is both listings' best accepted pair. A threshold on these scores
        (:func:`~shopee_match.match.metrics.operating_point`) is what ``link --high-precision``
        applies; recall over them needs the split's :meth:`true_pairs`."""
        from shopee_match.match.metrics import pair_maxima
        from shopee_match.match.pairs import best_accepted_mutual

        pairs, scores = self._scored_candidates(config, split, scorer)
        matches = self.predict(config, split, scorer)
        labels = self.labels[split]
        accepted = (np.asarray(matches[pairs.i, pairs.j]).ravel()
                    | np.asarray(matches[pairs.j, pairs.i]).ravel()).astype(bool)
        table = pair_maxima(pairs.i, pairs.j, score=scores, accepted=accepted,
                            match=labels[pairs.i] == labels[pairs.j]).reset_index()
        keep = best_accepted_mutual(table["lo"], table["hi"], table["score"], table["accepted"])
        return table["score"].to_numpy()[keep], table["match"].to_numpy()[keep]

    def _scored_candidates(self, config: MatchConfig, split: str, scorer=None):
        """``(pairs, scores)``: one split's candidate pairs and ``config``'s score of each."""
        from shopee_match.match.decision import (
            candidate_pair_features,
            neighbor_lists,
            scored_pairs,
        )
        from shopee_match.match.neighbors import real_neighbors

        gallery = self.splits[split]
        if config.second_stage is not None:
            pairs, scores = scored_pairs(gallery, config, scorer)
        else:
            pairs = candidate_pair_features(gallery, config)
            sims, idx = neighbor_lists(gallery, config)
            scores = sims[real_neighbors(idx)]  # in the order candidate_pairs lists them
        return pairs, np.asarray(scores, dtype=float)

    def true_pairs(self, split: str) -> int:
        """Unordered true pairs in scope in one split (offered by blocking or not)."""
        from shopee_match.match.metrics import true_pair_count

        return true_pair_count(self.labels[split], self.sources[split])

    def pair_training_data(self, split: str, config: MatchConfig
                           ) -> tuple[pd.DataFrame, np.ndarray]:
        """Pair features and same-group labels of one split's candidate pairs."""
        from shopee_match.match.decision import pair_training_data

        return pair_training_data(self.splits[split], self.labels[split], config)


def _clusters(matches) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    return connected_components(matches, directed=False)[1]


def best_static_f1(vectors, labels: Sequence[int], k: int = 50,
                   values: Sequence[float] | None = None) -> float:
    """Mean row-wise F1 of one gallery at its best static threshold: the val score that picks a
    training epoch (only ever computed on val)."""
    from shopee_match.match.fusion import fused_neighbors
    from shopee_match.match.thresholds import sweep

    values = np.linspace(0.05, 0.99, 48) if values is None else values
    sims, idx = fused_neighbors({"x": vectors}, {"x": 1.0}, k + 1)
    return float(sweep(sims, idx, labels, values)["f1"].max())
