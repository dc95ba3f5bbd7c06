"""Progress bars do not warn when notebook widgets are missing (as under papermill)."""

from __future__ import annotations

import warnings

from shopee_match.progress import progress_bar


def test_progress_bar_iterates_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(progress_bar(range(3), disable=True)) == [0, 1, 2]
        with progress_bar(total=2, disable=True) as bar:
            bar.update(2)

