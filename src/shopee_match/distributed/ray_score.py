"""Second-stage scoring on Ray: blocks of candidate pairs scored by actors that each load the
candidate's second stage once (a Ray Data ``map_batches`` stage).

A block carries what the stage reads of its pairs: their features and both titles, in the
order the gallery reads them (the cross-encoder reads the title of the lower row first), so
each pair gets the score it gets locally.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


class ScorePairs:
    """A Ray Data actor: the candidate's second stage, loaded once, scoring blocks of pairs."""

    def __init__(self, kind: str, path: str, threads: int = 1):
        import torch

        from shopee_match.apply.second_stages import load_second_stage

        torch.set_num_threads(threads)
        self.scorer = load_second_stage(kind, path)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from shopee_match.match.gallery import Gallery
        from shopee_match.match.second_stage import CandidatePairs

        m = len(batch)
        rows = np.concatenate([batch.pop("_row_a").to_numpy(), batch.pop("_row_b").to_numpy()])
        titles = np.concatenate([batch.pop("_title_a").to_numpy(),
                                 batch.pop("_title_b").to_numpy()]).astype(object)
        order, accept_at = batch.pop("_order").to_numpy(), batch.pop("_accept_at").iloc[0]
        gallery = Gallery({}, titles=titles, order=rows)
        pairs = CandidatePairs(gallery, np.arange(m), np.arange(m, 2 * m), batch)
        scores = self.scorer.score(pairs, None if np.isnan(accept_at) else float(accept_at))
        return pd.DataFrame({"_order": order, "score": scores})  # in the stage's float type


class RayScorer:
    """A :class:`~shopee_match.match.second_stage.PairScorer` that scores on Ray with the
    second stage saved at ``path`` (of ``kind``); ``local`` is the same stage loaded here,
    for the scores shown beside its own (``parts``)."""

    def __init__(self, executor, kind: str, path: str | Path, local):
        self.executor, self.kind, self.path, self.local = executor, kind, str(path), local

    def parts(self, pairs, scored_only: bool = False) -> dict[str, np.ndarray]:
        return self.local.parts(pairs, scored_only)

    def score(self, pairs, accept_at: float | None = None) -> np.ndarray:
        """Each pair's score, computed by the executor's actors."""
        import ray.data

        from shopee_match.distributed.runtime import in_blocks
        from shopee_match.progress import progress_bar

        gallery = pairs.gallery
        n = len(gallery)
        titles = (np.full(n, "", dtype=object) if gallery.titles is None  # a classifier alone
                  else np.asarray(gallery.titles, dtype=object))
        place = np.arange(n) if gallery.order is None else np.asarray(gallery.order)
        frame = pairs.features.reset_index(drop=True).copy()
        frame["_row_a"], frame["_row_b"] = place[pairs.i], place[pairs.j]
        frame["_title_a"], frame["_title_b"] = titles[pairs.i], titles[pairs.j]
        frame["_order"] = np.arange(len(frame))
        frame["_accept_at"] = np.nan if accept_at is None else float(accept_at)
        data = ray.data.from_pandas(in_blocks(frame, self.executor.score_rows)).map_batches(
            ScorePairs, batch_size=self.executor.score_rows, batch_format="pandas",
            fn_constructor_kwargs={"kind": self.kind, "path": self.path,
                                   "threads": self.executor.threads()},
            **self.executor.actor_options())
        order, scores = [], []
        with progress_bar(total=len(frame), desc=f"{self.kind} on Ray",
                          disable=not self.executor.progress, leave=False) as bar:
            for batch in data.iter_batches(batch_size=None, batch_format="pandas"):
                order.append(batch["_order"].to_numpy())
                scores.append(batch["score"].to_numpy())
                bar.update(len(batch))
        out = np.empty_like(np.concatenate(scores))  # the stage's own float type
        out[np.concatenate(order)] = np.concatenate(scores)
        return out
