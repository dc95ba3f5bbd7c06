"""Competition-style ``submission.csv``: build it from a saved candidate, validate, write.

The file has columns ``posting_id,matches``; ``matches`` is a space-separated
list of posting ids that includes the posting itself. Every write is
validated, and :func:`validate_submission` checks any file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.candidates import Candidate, utc_now
from shopee_match.files import atomic_write
from shopee_match.matcher import MatchConfig


class SubmissionError(ValueError):
    """A submission file breaks the format; the message lists what and where."""


def validate_submission(submission: str | Path | pd.DataFrame, test_ids: Iterable[str]
                        ) -> pd.DataFrame:
    """Check a submission against the test posting ids; return it as a DataFrame.

    Every test id must appear exactly once, every id in ``matches`` must be a
    test id, each row must include its own id and no id twice. All problems
    are reported together (line numbers as in the CSV file).
    """
    name = submission if not isinstance(submission, pd.DataFrame) else "submission"
    df = _read_submission(submission)
    if list(df.columns) != ["posting_id", "matches"]:
        raise SubmissionError(f"{name}: columns must be exactly posting_id,matches; "
                              f"found {list(df.columns)}")
    known = set(map(str, test_ids))
    problems = [f"line {line}: no {column}" for line, column in zip(*_missing_cells(df))]
    df = df.fillna("").astype(str)
    seen = df["posting_id"].value_counts()
    for pid in seen[seen > 1].index:
        problems.append(f"posting_id {pid!r} appears {seen[pid]} times")
    missing = known - set(df["posting_id"])
    if missing:
        problems.append(f"{len(missing)} test posting(s) missing, e.g. {sorted(missing)[:3]}")
    for line, (pid, matches) in enumerate(zip(df["posting_id"], df["matches"]), start=2):
        ids = matches.split()
        if pid not in known:
            problems.append(f"line {line}: unknown posting_id {pid!r}")
        if pid not in ids:
            problems.append(f"line {line}: {pid} does not list itself in matches")
        if len(set(ids)) != len(ids):
            problems.append(f"line {line}: {pid} lists an id more than once")
        unknown = [i for i in ids if i not in known]
        if unknown:
            problems.append(f"line {line}: unknown id(s) in matches, e.g. {unknown[:3]}")
    if problems:
        shown = "" if len(problems) <= 20 else " (the first 20)"
        raise SubmissionError(f"{name}: {len(problems)} problem(s){shown}:\n  " +
                              "\n  ".join(problems[:20]))
    return df


def _read_submission(submission: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(submission, pd.DataFrame):
        return submission.copy()
    path = Path(submission)
    if not path.is_file() or path.stat().st_size == 0:
        raise SubmissionError(f"{path} is {'empty' if path.is_file() else 'missing'}; a "
                              "submission starts with the line posting_id,matches")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _missing_cells(df: pd.DataFrame) -> tuple[list[int], list[str]]:
    """CSV line numbers and column names of empty cells (None/NaN in a DataFrame)."""
    rows, cols = np.nonzero(df.isna().to_numpy())
    return [int(r) + 2 for r in rows], [df.columns[c] for c in cols]


def write_submission(matches: pd.Series, path: str | Path) -> Path:
    """Write ``posting_id -> set of ids`` as submission.csv (self first), validated, atomically."""
    path = Path(path)
    rows = [{"posting_id": pid,
             "matches": " ".join([pid, *sorted(set(ids) - {pid})])}
            for pid, ids in matches.items()]
    df = pd.DataFrame(rows, columns=["posting_id", "matches"])
    validate_submission(df, matches.index)
    with atomic_write(path, "w") as f:
        df.to_csv(f, index=False)
    return path


def read_submission(path: str | Path) -> pd.Series:
    """``posting_id -> set of ids`` from a submission file."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.Series([set(m.split()) for m in df["matches"]], index=df["posting_id"],
                     dtype=object)


def predict_submission(postings: pd.DataFrame, config: MatchConfig, model=None,
                       cache_dir: str | Path | None = None, progress: bool = True,
                       engine: str = "auto") -> pd.Series:
    """Embed ``postings`` with the configuration's encoders and predict each one's match set.

    ``model`` is the configuration's fitted second stage (``Candidate.load_model()``);
    ``engine`` runs the encoders (:mod:`shopee_match.engines`).
    """
    return match_sets(postings, embed_for(postings, config, cache_dir, progress, engine),
                      config, model)


def match_sets(postings: pd.DataFrame, vectors: dict, config: MatchConfig, model=None
               ) -> pd.Series:
    """Each posting's predicted match set, from its embedded ``vectors``
    (:func:`embed_for`)."""
    from shopee_match.matching import matrix_to_sets, predict_matches

    phash = postings["image_phash"].to_numpy() if "image_phash" in postings else None
    matches = predict_matches(vectors, config, model, phash,
                              titles=postings["title"].fillna("").astype(str).to_numpy())
    return matrix_to_sets(matches, postings["posting_id"].astype(str).to_numpy())


def embed_for(postings: pd.DataFrame, config: MatchConfig, cache_dir: str | Path | None = None,
              progress: bool = True, engine: str = "auto", modalities: list[str] | None = None
              ) -> dict[str, object]:
    """The vectors of every modality ``config`` uses (or of ``modalities`` among them),
    embedded as it was tuned (the same models, checked by identity)."""
    from shopee_match.embeddings import embed_dataset

    wanted = config.modalities if modalities is None else modalities
    embeddings = embed_dataset(postings, {m: s for m, s in config.encoders.items()
                                          if m != "tfidf"},
                               modalities=wanted, image_size=config.image_size,
                               cache_dir=cache_dir, progress=progress, engine=engine)
    for m, e in embeddings.items():
        chosen = config.models.get(m)
        if chosen and chosen != e.model_id:
            raise ValueError(f"The configuration was tuned with {chosen} for {m}, but this "
                             f"environment gives {e.model_id}; re-run the notebook that made "
                             "the candidate.")
    vectors = {m: e.vectors for m, e in embeddings.items()}
    missing = [m for m in wanted if m not in vectors]
    if missing:
        raise ValueError(f"The configuration needs modalities {missing} that these postings "
                         "lack (no images?); choose a candidate made on data like this.")
    return vectors


def train_fingerprint(dataset: str, columns: str | dict | None = None) -> str:
    """Fingerprint of a dataset's labelled ``train.csv``: candidates made from it carry it."""
    from shopee_match.cache import dataset_fingerprint
    from shopee_match.data import load_dataset

    return dataset_fingerprint(load_dataset(dataset, "train", check_images="none",
                                            columns=columns)[0])


def load_test_postings(dataset: str, split_seed: int = 0, columns: str | dict | None = None,
                       test: str | Path | None = None) -> tuple[pd.DataFrame, Path]:
    """Test postings of a dataset and their folder.

    ``test`` (a CSV in test layout) is used when given; else a dataset
    with a ``test.csv`` (Kaggle's) is used as it is, and a labelled-only dataset (the demo)
    gets its group-aware ``test`` split written in test layout to ``<data>/<name>-heldout/``
    (with ``solution.csv`` for scoring): the same split notebook 03 reports as test.
    ``columns`` renames a catalog's columns.
    """
    from shopee_match.config import dataset_dir
    from shopee_match.data import ShopeeDataError, load_dataset, load_postings, write_test_layout
    from shopee_match.splits import split_by_group

    if test is not None:
        return load_postings(test, columns=columns)[0], Path(test).parent
    folder = dataset_dir(dataset)
    if (folder / "test.csv").is_file():
        return load_postings(folder / "test.csv", columns=columns)[0], folder
    postings, _ = load_dataset(dataset, "train", columns=columns)
    split = split_by_group(postings["label_group"], seed=split_seed)
    if not (split == "test").any():
        raise ShopeeDataError(f"{folder}: its {len(postings)} listings leave no label group for "
                              "a held-out test split; add a test.csv or more labelled data.")
    held_out = folder.parent / f"{folder.name}-heldout"
    write_test_layout(postings[split == "test"].reset_index(drop=True), held_out)
    return load_postings(held_out / "test.csv")[0], held_out


def quick_candidate(dataset: str, profile: str = "offline", image_size: int = 224,
                    split_seed: int = 0, k: int = 50, columns: str | dict | None = None
                    ) -> Candidate:
    """An unsaved fallback when no notebook saved a candidate: equal-weight fusion of the
    dense modalities with the static threshold chosen on val (fair test F1 alongside)."""
    from shopee_match.cache import dataset_fingerprint
    from shopee_match.data import load_dataset, require_duplicates
    from shopee_match.embeddings import embed_dataset, resolve_profile
    from shopee_match.selection import Galleries, tune

    postings, _ = load_dataset(dataset, "train", columns=columns)
    require_duplicates(postings, dataset)
    embeddings = embed_dataset(postings, profile, image_size=image_size)
    dense = [m for m in embeddings if m != "tfidf"]
    galleries = Galleries({m: embeddings[m].vectors for m in dense},
                          postings["label_group"].to_numpy(), split_seed=split_seed)
    base = MatchConfig(encoders=resolve_profile(profile) | {"tfidf": "tfidf"},
                       fusion_weights={m: 1.0 for m in dense}, k=k, image_size=image_size,
                       value=0.5, models={m: embeddings[m].model_id for m in dense})
    tuned = tune(galleries.evaluator(), base, "value", list(np.linspace(0.3, 0.98, 69)))
    return Candidate("quick-fallback", tuned.config, tuned.val_f1, tuned.test_f1, dataset,
                     dataset_fingerprint(postings), split_seed, "quick_candidate", utc_now(),
                     tuned.test_f1_upper)
