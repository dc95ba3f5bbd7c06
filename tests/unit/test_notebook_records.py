"""record() values survive into the saved notebook and read back."""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest

from shopee_match.notebook import RECORD_MIME, _plain, peak_memory_mb, read_records, record


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
            RECORD_MIME: {"name": "f1", "json": "0.5"}, "text/plain": "f1 = 0.5"}),
        nbformat.v4.new_output("stream", text="noise"),
        nbformat.v4.new_output("display_data", data={
            RECORD_MIME: {"name": "f1", "json": "0.7"}, "text/plain": "f1 = 0.7"}),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("x"), cell]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert read_records(path) == {"f1": 0.7}


def test_recorded_dicts_keep_their_order_through_nbformat(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw: shown.append(data))
    record("recall_at_k", {1: 0.5, 5: 0.7, 10: 0.8, 20: 0.9, 50: 0.95})
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("record(...)")
    cell.outputs = [nbformat.v4.new_output("display_data", data=shown[0])]
    nb.cells = [cell]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))  # nbformat sorts the keys of JSON objects it writes
    assert list(read_records(path)["recall_at_k"]) == ["1", "5", "10", "20", "50"]


def test_peak_memory_is_the_high_water_mark_linux_reports():
    import sys
    from pathlib import Path

    import numpy as np
    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    block = np.ones(96 * 2**20 // 8)  # 96 MiB, touched
    status = Path("/proc/self/status").read_text()
    hwm_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    assert peak_memory_mb() == pytest.approx(hwm_kib / 1024, abs=2)
    assert peak_memory_mb() > 96 and block.sum() == len(block)
