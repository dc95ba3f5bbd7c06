"""Competition-style ``submission.csv``: write it, validate it, read it back.

The file has columns ``posting_id,matches``; ``matches`` is a space-separated
list of posting ids that includes the posting itself. Every write is
validated, and :func:`validate_submission` checks any file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.data.schema import POSTING_ID
from shopee_match.files import atomic_write


class SubmissionError(ValueError):
    """A submission file breaks the format; the message lists what and where."""


def validate_submission(submission: str | Path | pd.DataFrame, test_ids: Iterable[str]
                        ) -> pd.DataFrame:
    """Check a submission against the test posting ids; return it as a DataFrame.

    Every test id must appear exactly once, every id in ``matches`` must be a
    test id, each row must include its own id and no id twice. All problems
    are reported together (line numbers as in the CSV file).
    """
    name = submission if not isinstance(submission, pd.DataFrame) else "submission"
    df = _read_submission(submission)
    if list(df.columns) != [POSTING_ID, "matches"]:
        raise SubmissionError(f"{name}: columns must be exactly posting_id,matches; "
                              f"found {list(df.columns)}")
    known = set(map(str, test_ids))
    problems = [f"line {line}: no {column}" for line, column in zip(*_missing_cells(df))]
    df = df.fillna("").astype(str)
    seen = df[POSTING_ID].value_counts()
    for pid in seen[seen > 1].index:
        problems.append(f"posting_id {pid!r} appears {seen[pid]} times")
    missing = known - set(df[POSTING_ID])
    if missing:
        problems.append(f"{len(missing)} test posting(s) missing, e.g. {sorted(missing)[:3]}")
    for line, (pid, matches) in enumerate(zip(df[POSTING_ID], df["matches"]), start=2):
        ids = matches.split()
        if pid not in known:
            problems.append(f"line {line}: unknown posting_id {pid!r}")
        if pid not in ids:
            problems.append(f"line {line}: {pid} does not list itself in matches")
        if len(set(ids)) != len(ids):
            problems.append(f"line {line}: {pid} lists an id more than once")
        unknown = [i for i in ids if i not in known]
        if unknown:
            problems.append(f"line {line}: unknown id(s) in matches, e.g. {unknown[:3]}")
    if problems:
        shown = "" if len(problems) <= 20 else " (the first 20)"
        raise SubmissionError(f"{name}: {len(problems)} problem(s){shown}:\n  " +
                              "\n  ".join(problems[:20]))
    return df


def _read_submission(submission: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(submission, pd.DataFrame):
        return submission.copy()
    path = Path(submission)
    if not path.is_file() or path.stat().st_size == 0:
        raise SubmissionError(f"{path} is {'empty' if path.is_file() else 'missing'}; a "
                              "submission starts with the line posting_id,matches")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _missing_cells(df: pd.DataFrame) -> tuple[list[int], list[str]]:
    """CSV line numbers and column names of empty cells (None/NaN in a DataFrame)."""
    rows, cols = np.nonzero(df.isna().to_numpy())
    return [int(r) + 2 for r in rows], [df.columns[c] for c in cols]


def write_submission(matches: pd.Series, path: str | Path) -> Path:
    """Write ``posting_id -> set of ids`` as submission.csv (self first), validated, atomically."""
    path = Path(path)
    rows = [{POSTING_ID: pid,
             "matches": " ".join([pid, *sorted(set(ids) - {pid})])}
            for pid, ids in matches.items()]
    df = pd.DataFrame(rows, columns=[POSTING_ID, "matches"])
    validate_submission(df, matches.index)
    with atomic_write(path, "w") as f:
        df.to_csv(f, index=False)
    return path


def read_submission(path: str | Path) -> pd.Series:
    """``posting_id -> set of ids`` from a submission file."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.Series([set(m.split()) for m in df["matches"]], index=df[POSTING_ID],
                     dtype=object)
