"""Active learning: which pairs to label next, and a simulation that measures what it buys.

:func:`pick_uncertain` takes the pairs closest to the decision threshold plus a fixed
share of random ones; :func:`simulate_labelling` replays a labelling session with an oracle
(the ground truth answering, as on the demo): after each batch of labels the second stage is
refitted and scored, so uncertainty sampling and random sampling can be compared at the same
numbers of labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

#: how the next pairs are chosen in :func:`simulate_labelling`
STRATEGIES = ("uncertainty", "random")


def pick_uncertain(scores: np.ndarray, threshold: float, n: int, *, exclude=None,
                   random_share: float = 0.2, seed: int = 0) -> np.ndarray:
    """Positions of ``n`` pairs to label next: ``1 - random_share`` of them the closest to
    ``threshold`` (ties to the earlier position), the rest a seeded random sample of the
    others; none of ``exclude`` (a boolean mask of pairs already labelled)."""
    scores = np.asarray(scores, float)
    free = np.ones(len(scores), bool) if exclude is None else ~np.asarray(exclude, bool)
    n = min(n, int(free.sum()))
    n_random = int(round(random_share * n))
    candidates = np.flatnonzero(free)
    close = candidates[np.argsort(np.abs(scores[candidates] - threshold), kind="stable")]
    chosen = close[:n - n_random]
    rest = np.setdiff1d(candidates, chosen)
    rng = np.random.default_rng(seed)
    return np.concatenate([chosen, rng.choice(rest, n_random, replace=False)]).astype(np.int64)


def simulate_labelling(n_pool: int, fit_and_score: Callable[[np.ndarray], tuple],
                       steps: Sequence[int], strategy: str = "uncertainty",
                       random_share: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """One simulated labelling session over a pool of ``n_pool`` pairs.

    ``fit_and_score(labelled)`` refits on the pool positions labelled so far (in the order
    they were labelled) and returns ``(pool_scores, threshold, figures)``: the refitted
    model's score of every pool pair, its decision threshold and a dict of figures to report.
    At each number of labels in ``steps`` (ascending) the pairs added since the last step are
    chosen by ``strategy`` from the previous model's scores (:func:`pick_uncertain`) or at
    random. One row per step: ``labels``, ``strategy`` and the figures.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: one of {STRATEGIES}")
    if list(steps) != sorted(steps) or (len(steps) and steps[0] < 0):
        raise ValueError(f"steps must be ascending label counts from 0, got {list(steps)}")
    rng = np.random.default_rng(seed)
    labelled = np.zeros(0, dtype=np.int64)
    rows, scores, threshold = [], None, None
    for step, n in enumerate(steps):
        need = min(n, n_pool) - len(labelled)
        if need > 0:
            taken = np.zeros(n_pool, bool)
            taken[labelled] = True
            if strategy == "uncertainty" and scores is not None:
                new = pick_uncertain(scores, threshold, need, exclude=taken,
                                     random_share=random_share, seed=seed + step)
            else:
                new = rng.permutation(np.flatnonzero(~taken))[:need]
            labelled = np.concatenate([labelled, new])
        scores, threshold, figures = fit_and_score(labelled)
        rows.append({"labels": int(len(labelled)), "strategy": strategy, **figures})
    return pd.DataFrame(rows)
