"""Datasets by name: the generated demo sets, Kaggle's Shopee data or a folder, their
fingerprints, their test postings, and the file a catalog argument names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from shopee_match.data.paths import DEMO_DATASETS, TWO_SHOP_DEMOS, dataset_dir
from shopee_match.data.postings import (
    ShopeeDataError,
    ValidationReport,
    is_parquet,
    load_postings,
    write_test_layout,
)
from shopee_match.data.schema import IMAGE_PATH, LABEL_GROUP, POSTING_ID, TITLE
from shopee_match.files import is_url


def load_dataset(
    name: str = "demo", split: str = "train", check_images: str = "header",
    columns: str | dict | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Load ``<split>.csv`` (or ``<split>.parquet``) of a dataset given by name (see
    ``paths.dataset_dir``) or path.

    Demo datasets are generated on first use (and again when the generator
    changed), so a notebook never needs another one to have run before it.
    ``columns`` renames a catalog's columns (:func:`~shopee_match.data.postings.parse_columns`).
    """
    folder = dataset_dir(name)
    if name in DEMO_DATASETS:  # generated, or regenerated after a generator change
        from shopee_match.data.demo import generate_demo

        generate_demo(folder, size=DEMO_DATASETS[name], shops=2 if name in TWO_SHOP_DEMOS else 1)
    return load_postings(split_file(folder, split), check_images=check_images,
                         columns=columns)


def dataset_fingerprint(postings: pd.DataFrame) -> str:
    """Hash of posting ids, titles and image file names + sizes (not contents, for speed)."""
    h = hashlib.sha256()
    h.update("\x1f".join(postings[POSTING_ID].astype(str)).encode())
    h.update(b"\x1e")
    h.update("\x1f".join(postings[TITLE].fillna("").astype(str)).encode())
    if IMAGE_PATH in postings:
        sizes = [os.stat(p).st_size if p and os.path.isfile(p) else -1
                 for p in postings[IMAGE_PATH]]
        names = [os.path.basename(p) for p in postings[IMAGE_PATH]]
        h.update(b"\x1e")
        h.update("\x1f".join(f"{n}:{s}" for n, s in zip(names, sizes)).encode())
    return h.hexdigest()[:20]


def train_fingerprint(dataset: str, columns: str | dict | None = None) -> str:
    """Fingerprint of a dataset's labelled ``train.csv``: candidates made from it carry it."""
    return dataset_fingerprint(load_dataset(dataset, "train", check_images="none",
                                            columns=columns)[0])


def load_test_postings(dataset: str, split_seed: int = 0, columns: str | dict | None = None,
                       test: str | Path | None = None,
                       read_rows=None) -> tuple[pd.DataFrame, Path]:
    """Test postings of a dataset and their folder.

    ``test`` (a CSV in test layout) is used when given; else a dataset
    with a ``test.csv`` (Kaggle's) is used as it is, and a labelled-only dataset (the demo)
    gets its group-aware ``test`` split written in test layout to ``<data>/<name>-heldout/``
    (with ``solution.csv`` for scoring): the same split notebook 03 reports as test.
    ``columns`` renames a catalog's columns; ``read_rows`` reads a given test file
    (:func:`~shopee_match.data.postings.load_postings`).
    """
    from shopee_match.data.splits import split_by_group

    if test is not None:
        return load_postings(test, columns=columns, read_rows=read_rows)[0], Path(test).parent
    folder = dataset_dir(dataset)
    if split_file(folder, "test").is_file():
        return load_postings(split_file(folder, "test"), columns=columns,
                             read_rows=read_rows)[0], folder
    postings, _ = load_dataset(dataset, "train", columns=columns)
    split = split_by_group(postings[LABEL_GROUP], seed=split_seed)
    if not (split == "test").any():
        raise ShopeeDataError(f"{folder}: its {len(postings)} listings leave no label group for "
                              "a held-out test split; add a test.csv or more labelled data.")
    held_out = folder.parent / f"{folder.name}-heldout"
    write_test_layout(postings[split == "test"].reset_index(drop=True), held_out)
    return load_postings(held_out / "test.csv")[0], held_out


def split_file(folder: Path, split: str) -> Path:
    """``folder/<split>.csv``, or ``<split>.parquet`` where only that one exists."""
    csv, parquet = folder / f"{split}.csv", folder / f"{split}.parquet"
    return parquet if parquet.is_file() and not csv.is_file() else csv


def catalog_path(catalog: str | Path, order: tuple[str, ...]) -> str | Path:
    """The file a catalog argument names: a CSV or Parquet path or URL, or the first split of
    ``order`` (``"test"``, ``"train"``) found in a dataset folder (or a dataset name's)."""
    if is_url(catalog):  # a file in object storage (s3://, gs://, file://): as named
        return catalog
    source = Path(catalog)
    if source.suffix.lower() == ".csv" or is_parquet(source):
        return source
    folder = source if source.is_dir() else dataset_dir(str(catalog))
    found = (split_file(folder, split) for split in order)
    return next((f for f in found if f.is_file()), folder / f"{order[0]}.csv")
