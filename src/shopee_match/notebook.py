"""Record a notebook's key numbers and read them back from the executed notebook.

``record(name, value)`` displays the value with a MIME type of our own next to
a plain-text line, so it is visible in the notebook and HTML, and
:func:`read_records` finds it in the saved ``.ipynb`` (the ~30-line nbformat
replacement for scrapbook that microsoft/recommenders uses). The value is
stored as JSON text, because nbformat sorts the keys of JSON objects it writes
and recorded dicts keep their order (recall@K for K = 1, 5, 10, 20, 50).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RECORD_MIME = "application/vnd.shopee-match.record+json"


def record(name: str, value: Any) -> Any:
    """Show and store one result of the notebook (a JSON-serialisable number, string, list…)."""
    from IPython.display import display

    value = _plain(value)
    text = json.dumps(value, allow_nan=False)  # fail here, not when the report is built
    display({RECORD_MIME: {"name": name, "json": text}, "text/plain": f"{name} = {value!r}"},
            raw=True)
    return value


def peak_memory_mb() -> float:
    """Peak resident memory of this process (the notebook's kernel) so far, in MiB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def read_records(notebook: str | Path) -> dict[str, Any]:
    """All ``record()`` values of an executed notebook, in order (a later one wins)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    records: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                item = data[RECORD_MIME]
                records[item["name"]] = json.loads(item["json"])
    return records


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and pandas objects -> JSON types; NaN/inf -> None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
