"""submission.csv: validation catches every malformed file; writing round-trips."""

from __future__ import annotations

import pandas as pd
import pytest

from shopee_match.apply.submission import (
    SubmissionError,
    read_submission,
    validate_submission,
    write_submission,
)
from shopee_match.data.postings import load_postings, write_test_layout
from shopee_match.match.metrics import row_f1

IDS = ["a", "b", "c"]


def frame(rows):
    return pd.DataFrame(rows, columns=["posting_id", "matches"])


def test_valid_submission_passes():
    df = validate_submission(frame([["a", "a b"], ["b", "b a"], ["c", "c"]]), IDS)
    assert len(df) == 3


@pytest.mark.parametrize("rows, message", [
    ([["a", "a"], ["b", "b"]], "1 test posting"),
    ([["a", "a"], ["a", "a"], ["b", "b"], ["c", "c"]], "appears 2 times"),
    ([["a", "b"], ["b", "b"], ["c", "c"]], "does not list itself"),
    ([["a", "a a"], ["b", "b"], ["c", "c"]], "more than once"),
    ([["a", "a z"], ["b", "b"], ["c", "c"]], "unknown id"),
    ([["a", "a"], ["b", "b"], ["c", "c"], ["z", "z"]], "unknown posting_id"),
])
def test_malformed_submissions_are_rejected(rows, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(frame(rows), IDS)


def test_wrong_columns_are_rejected(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("id,matches\na,a\n")
    with pytest.raises(SubmissionError, match="columns must be exactly"):
        validate_submission(path, ["a"])


def test_write_then_read_round_trips(tmp_path):
    matches = pd.Series([{"b"}, {"a", "b"}, {"c"}], index=IDS)
    path = write_submission(matches, tmp_path / "submission.csv")
    assert path.read_text().splitlines() == ["posting_id,matches", "a,a b", "b,b a", "c,c"]
    back = read_submission(path)
    assert back["a"] == {"a", "b"} and back["c"] == {"c"}
    validate_submission(path, IDS)


def test_write_refuses_unknown_ids(tmp_path):
    with pytest.raises(SubmissionError, match="unknown id"):
        write_submission(pd.Series([{"a", "zz"}], index=["a"]), tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_test_layout_hides_labels_and_keeps_a_solution(data_root, tmp_path):
    train, _ = load_postings(data_root / "demo-tiny" / "train.csv", progress=False)
    dest = write_test_layout(train.head(40), tmp_path / "heldout")
    test, report = load_postings(dest / "test.csv", progress=False)
    assert not report.has_labels and report.ok and len(test) == 40
    solution = read_submission(dest / "solution.csv")
    assert row_f1(solution, solution) == 1.0
    assert set(solution.index) == set(test["posting_id"])
    assert list(test["title"]) == list(train.head(40)["title"])  # repaired again on load


def test_an_empty_or_missing_submission_file_is_named(tmp_path):
    empty = tmp_path / "submission.csv"
    empty.write_text("")
    with pytest.raises(SubmissionError, match=r"submission.csv is empty.*posting_id,matches"):
        validate_submission(empty, ["a"])
    with pytest.raises(SubmissionError, match=r"nope.csv is missing"):
        validate_submission(tmp_path / "nope.csv", ["a"])


def test_missing_values_in_a_dataframe_are_problems_not_crashes():
    df = pd.DataFrame({"posting_id": ["a", "b", None], "matches": ["a", None, "c"]})
    with pytest.raises(SubmissionError) as err:
        validate_submission(df, ["a", "b", "c"])
    assert "line 3: no matches" in str(err.value) and "line 4: no posting_id" in str(err.value)


def test_every_problem_is_counted_though_twenty_are_shown():
    ids = [f"t{i}" for i in range(30)]
    df = pd.DataFrame({"posting_id": ids, "matches": ["x"] * 30})  # 2 problems per line
    with pytest.raises(SubmissionError, match=r"60 problem\(s\) \(the first 20\)") as err:
        validate_submission(df, ids)
    assert len(str(err.value).splitlines()) == 21
