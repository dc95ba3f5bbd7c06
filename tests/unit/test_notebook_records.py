"""record() values survive into the saved notebook and read back."""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest

from shopee_match.notebook import RECORD_MIME, _plain, read_records, record


def test_plain_converts_numpy_and_nan():
    value = _plain({"a": np.float32(0.5), "b": np.arange(3), "c": math.nan, 4: (1, 2)})
    assert value == {"a": 0.5, "b": [0, 1, 2], "c": None, "4": [1, 2]}


def test_record_rejects_values_json_cannot_hold():
    with pytest.raises(TypeError):
        record("bad", object())


def test_read_records_finds_values_in_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("record(...)")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            RECORD_MIME: {"name": "f1", "value": 0.5}, "text/plain": "f1 = 0.5"}),
        nbformat.v4.new_output("stream", text="noise"),
        nbformat.v4.new_output("display_data", data={
            RECORD_MIME: {"name": "f1", "value": 0.7}, "text/plain": "f1 = 0.7"}),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("x"), cell]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert read_records(path) == {"f1": 0.7}
