"""Paths and dataset names.

Every path can be overridden with an environment variable, so Colab, Kaggle and
CI can point the kit at their own folders without editing code:

``SHOPEE_MATCH_HOME``      project root (default: the folder holding ``notebooks/``,
                           else the current directory)
``SHOPEE_MATCH_DATA``      datasets (default ``<home>/data``)
``SHOPEE_MATCH_ARTIFACTS`` embeddings, models, submission (default ``<home>/artifacts``)
``SHOPEE_MATCH_REPORTS``   executed notebooks and HTML (default ``<home>/reports``)
``SHOPEE_MATCH_ONNX``      exported ONNX graphs (default ``<artifacts>/onnx``; they depend on
                           the weights only, so several projects or test runs may share one)
``SHOPEE_MATCH_EMBEDDINGS`` the embedding cache (default ``<artifacts>/embeddings``; entries
                           are keyed by data, model and parameters, so it may be shared too)
"""

from __future__ import annotations

import os
from pathlib import Path

#: Names of the generated demo datasets and their size (see :mod:`shopee_match.data.demo`).
DEMO_DATASETS = {"demo-tiny": "tiny", "demo": "demo", "demo-shopee": "shopee",
                 "demo-shops": "tiny"}
#: demo datasets whose products are listed by two shops (a ``source`` column to link across)
TWO_SHOP_DEMOS = ("demo-shops",)
#: Name of the real Kaggle data (downloaded with ``shopee-match download``).
SHOPEE_DATASET = "shopee"
#: Names of real benchmarks written by ``shopee-match download NAME``.
BENCHMARK_DATASETS = ("amazon-google",)

def project_home() -> Path:
    """Root of the project: ``$SHOPEE_MATCH_HOME`` or the nearest parent with ``notebooks/``."""
    env = os.environ.get("SHOPEE_MATCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return here


def data_dir() -> Path:
    """Folder holding datasets, one sub-folder each."""
    return _env_path("SHOPEE_MATCH_DATA", "data")


def artifacts_dir() -> Path:
    """Folder for caches, models and submissions."""
    return _env_path("SHOPEE_MATCH_ARTIFACTS", "artifacts")


def onnx_dir() -> Path:
    """Where exported ONNX graphs are kept (see :mod:`shopee_match.embed.engines`)."""
    env = os.environ.get("SHOPEE_MATCH_ONNX")
    return Path(env).expanduser() if env else artifacts_dir() / "onnx"


def embeddings_dir() -> Path:
    """Where embeddings are cached (see :mod:`shopee_match.embed.cache`)."""
    env = os.environ.get("SHOPEE_MATCH_EMBEDDINGS")
    return Path(env).expanduser() if env else artifacts_dir() / "embeddings"


def models_dir() -> Path:
    """``artifacts/models``: fine-tuned encoders and cross-encoders, one folder each."""
    return artifacts_dir() / "models"


def candidates_dir() -> Path:
    """``artifacts/candidates``: saved candidates, one folder each."""
    return artifacts_dir() / "candidates"


def reports_dir() -> Path:
    """Folder for executed notebooks, HTML pages and metrics.json."""
    return _env_path("SHOPEE_MATCH_REPORTS", "reports")


def dataset_dir(name: str) -> Path:
    """Folder of a dataset given by name (``demo``, ``demo-tiny``, ``shopee``…) or by path."""
    if name in DEMO_DATASETS or name == SHOPEE_DATASET or name in BENCHMARK_DATASETS:
        return data_dir() / name
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    known = ", ".join([*DEMO_DATASETS, SHOPEE_DATASET, *BENCHMARK_DATASETS])
    raise ValueError(
        f"Unknown dataset {name!r}: use one of {known} or the path of a folder "
        "holding train.csv (and train_images/)."
    )


def _env_path(variable: str, default: str) -> Path:
    env = os.environ.get(variable)
    return Path(env).expanduser().resolve() if env else project_home() / default
