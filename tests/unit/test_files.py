"""atomic_write: all or nothing."""

from __future__ import annotations

import pytest

from shopee_match.files import atomic_write


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out" / "f.txt"
    with atomic_write(target, "w") as f:
        f.write("first")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("half of the second")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
