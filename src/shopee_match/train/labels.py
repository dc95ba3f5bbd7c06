"""The labels people give candidate pairs: one append-only file, never rewritten.

Every answer (``same``, ``different``, ``skip``) and every ``undo`` is one CSV line of
``artifacts/labels/labels.csv``, appended and flushed to disk at once, so a crash or a kernel
restart loses nothing and labelling resumes where it stopped. Reading the file replays it
(:func:`current_labels`): an ``undo`` withdraws the latest answer not yet withdrawn, and a
pair answered twice keeps its last answer. A line edited by hand into something else is an
error naming the file and line.

Labels become training pairs with :func:`training_labels`, which sets aside those naming a
val or test posting (kept, counted, never trained on: that would leak into the evaluation).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

#: what a line of the labels file may say
ANSWERS = ("same", "different", "skip")
UNDO = "undo"
LABEL_COLUMNS = ["time", "posting_id_1", "posting_id_2", "label", "queue", "candidate",
                 "title_1", "title_2", "scores"]
#: the scores of a queue row shown to the labeller (and kept with its answer)
SCORE_COLUMNS = ("bi_encoder", "cross_encoder", "score")


def labels_path() -> Path:
    """``artifacts/labels/labels.csv``: the one labels file of the kit."""
    from shopee_match.data.paths import artifacts_dir

    return artifacts_dir() / "labels" / "labels.csv"


def pair_key(a: str, b: str) -> tuple[str, str]:
    """A pair's key: its two posting ids in a fixed order (a pair is the same either way)."""
    a, b = str(a), str(b)
    return (a, b) if a <= b else (b, a)


class LabelLog:
    """The labels file, opened for appending: :meth:`answer` and :meth:`undo` write one line
    each, flushed and synced to disk before they return. The file is read once, when it is
    opened; the answers standing are then kept up to date in memory (one writer at a
    time)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else labels_path()
        self._lines = read_label_lines(self.path)[LABEL_COLUMNS].values.tolist()
        self._standing = _standing(row[3] for row in self._lines)

    def answer(self, posting_id_1: str, posting_id_2: str, label: str, *, queue: str = "",
               candidate: str = "", title_1: str = "", title_2: str = "",
               scores: Mapping[str, float] | None = None, time: str | None = None) -> None:
        """Append one answer (``same``, ``different`` or ``skip``) for a pair."""
        if label not in ANSWERS:
            raise ValueError(f"a label is one of {ANSWERS}, not {label!r}")
        if str(posting_id_1) == str(posting_id_2):
            raise ValueError(f"a pair needs two different postings, got {posting_id_1!r} twice")
        shown = {k: round(float(v), 4) for k, v in (scores or {}).items() if v is not None}
        self._standing.append(len(self._lines))
        self._append([time or _now(), posting_id_1, posting_id_2, label, queue, candidate,
                      title_1, title_2, json.dumps(shown, sort_keys=True)])

    def undo(self, time: str | None = None) -> tuple[str, str] | None:
        """Append an ``undo``: the latest answer not yet withdrawn is withdrawn. Returns that
        answer's pair (:func:`pair_key`), or None when there was none."""
        withdrawn = self._lines[self._standing.pop()] if self._standing else None
        self._append([time or _now(), "", "", UNDO, "", "", "", "", ""])
        return None if withdrawn is None else pair_key(withdrawn[1], withdrawn[2])

    def current(self) -> pd.DataFrame:
        """The answers that stand now (as :func:`current_labels` reads them from the file)."""
        return _latest_per_pair(pd.DataFrame([self._lines[p] for p in self._standing],
                                             columns=LABEL_COLUMNS))

    def _append(self, row: list) -> None:
        import os

        row = [str(v) for v in row]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with self.path.open("a", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(LABEL_COLUMNS)
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
        self._lines.append(row)


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")


def read_label_lines(path: str | Path) -> pd.DataFrame:
    """Every line of a labels file as text, with its ``line`` number; a missing file gives
    none. A missing column, a line with more or fewer fields, an unknown label, an answer
    without both ids or a ``scores`` field that is not a JSON object is an error naming the
    file and the line(s)."""
    from shopee_match.data.postings import read_csv_rows

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=[*LABEL_COLUMNS, "line"], dtype=str)
    try:
        table = read_csv_rows(path, empty_ok=True)
    except ValueError as err:
        raise ValueError(f"{err} (the labels file; fix or delete the line: every other "
                         "label is kept)") from err
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}: its first line must be "
                         f"{','.join(LABEL_COLUMNS)}")
    problems = []
    for row in table.itertuples(index=False):
        if row.label not in (*ANSWERS, UNDO):
            problems.append(f"line {row.line}: label {row.label!r} is not one of "
                            f"{', '.join((*ANSWERS, UNDO))}")
        elif row.label != UNDO and (not row.posting_id_1.strip() or not row.posting_id_2.strip()
                                    or row.posting_id_1 == row.posting_id_2):
            problems.append(f"line {row.line}: an answer needs two different posting ids")
        elif row.scores.strip() and not _is_json_object(row.scores):
            problems.append(f"line {row.line}: scores {row.scores!r} is not a JSON object")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems[:5]) +
                         (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "") +
                         ". Fix or delete those lines; every other label is kept.")
    return table[[*LABEL_COLUMNS, "line"]]


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def current_labels(path: str | Path) -> pd.DataFrame:
    """The answers standing after replaying the file: each ``undo`` withdraws the latest
    answer not yet withdrawn; of a pair's remaining answers the last one counts. One row
    per pair (``skip`` included), in the order they were last answered; ``key`` is the
    pair's :func:`pair_key`."""
    lines = read_label_lines(path)
    return _latest_per_pair(lines.iloc[_standing(lines["label"])])


def _standing(labels) -> list[int]:
    """Positions of the answers an ``undo`` has not withdrawn, in order."""
    kept: list[int] = []
    for position, label in enumerate(labels):
        if label != UNDO:
            kept.append(position)
        elif kept:
            kept.pop()
    return kept


def _latest_per_pair(answers: pd.DataFrame) -> pd.DataFrame:
    answers = answers.copy()
    answers["key"] = [pair_key(a, b) for a, b in zip(answers["posting_id_1"],
                                                   answers["posting_id_2"])]
    return answers.drop_duplicates("key", keep="last").reset_index(drop=True)


def decided(answers: pd.DataFrame) -> pd.DataFrame:
    """The ``same`` and ``different`` answers (skips left out)."""
    return answers[answers["label"].isin(["same", "different"])]


def names_any(table: pd.DataFrame, ids: Sequence[str]) -> pd.Series:
    """Rows of a pair table (``posting_id_1``, ``posting_id_2``) naming any of ``ids``."""
    ids = set(map(str, ids))
    return table["posting_id_1"].isin(ids) | table["posting_id_2"].isin(ids)


def shown_scores(row) -> dict[str, float]:
    """The scores of :data:`SCORE_COLUMNS` a queue row has (written with each answer)."""
    return {k: float(row[k]) for k in SCORE_COLUMNS if k in row and pd.notna(row[k])}


def label_counts(answers: pd.DataFrame, queue_size: int | None = None) -> dict[str, int]:
    """How many pairs are labelled ``same``, ``different``, skipped, and (given the queue's
    size) how many of the queue remain."""
    counts = answers["label"].value_counts()
    out = {"labelled": int(counts.get("same", 0) + counts.get("different", 0)),
           "same": int(counts.get("same", 0)), "different": int(counts.get("different", 0)),
           "skipped": int(counts.get("skip", 0))}
    if queue_size is not None:
        out["remaining"] = max(queue_size - len(answers), 0)
    return out


def labels_digest(answers: pd.DataFrame) -> str:
    """16 hex digits naming the same/different answers (pair and label, in any order): a
    version retrained on the same labels gets the same digest."""
    import hashlib

    chosen = decided(answers)
    text = "\n".join(sorted(f"{a}\t{b}\t{y}" for (a, b), y in zip(chosen["key"],
                                                                   chosen["label"])))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_labels(answers: pd.DataFrame, held_out_ids: Sequence[str]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, set_aside)``: the same/different answers as pairs with a 0/1 ``label``;
    those naming a posting of ``held_out_ids`` (val or test postings) are set aside,
    never trained on."""
    chosen = decided(answers).assign(label=lambda t: (t["label"] == "same").astype(float))
    leaks = names_any(chosen, held_out_ids)
    return chosen[~leaks].reset_index(drop=True), chosen[leaks].reset_index(drop=True)


def labelled_training_pairs(path: str | Path, exclude_ids: Sequence[str]
                            ) -> tuple[pd.DataFrame, int]:
    """``(pairs, set_aside)``: the same/different answers of a labels file as cross-encoder
    training pairs (``sentence1``, ``sentence2``, ``label``), leaving out those naming a
    posting of ``exclude_ids`` (counted in ``set_aside``). A missing file gives none."""
    train, aside = training_labels(current_labels(path), exclude_ids)
    return pd.DataFrame({"sentence1": train["title_1"].to_numpy(),
                         "sentence2": train["title_2"].to_numpy(),
                         "label": train["label"].to_numpy()}), len(aside)


def label_pairs(answers: pd.DataFrame, posting_ids: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, label)``: row indices into ``posting_ids`` of each same/different answer
    whose postings are both there, with label 1.0 (same) or 0.0."""
    position = {str(p): i for i, p in enumerate(posting_ids)}
    chosen = decided(answers)
    chosen = chosen[chosen["posting_id_1"].isin(position) & chosen["posting_id_2"].isin(position)]
    return (chosen["posting_id_1"].map(position).to_numpy(dtype=np.int64),
            chosen["posting_id_2"].map(position).to_numpy(dtype=np.int64),
            (chosen["label"] == "same").to_numpy(dtype=float))
