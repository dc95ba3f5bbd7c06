"""Competition-style ``submission.csv``: build it from a saved configuration, validate, write.

The file has columns ``posting_id,matches``; ``matches`` is a space-separated
list of posting ids that includes the posting itself. Every write is
validated, and :func:`validate_submission` checks any file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from shopee_match.files import atomic_write


class SubmissionError(ValueError):
    """A submission file breaks the format; the message lists what and where."""


def validate_submission(submission: str | Path | pd.DataFrame, test_ids: Iterable[str]
                        ) -> pd.DataFrame:
    """Check a submission against the test posting ids; return it as a DataFrame.

    Every test id must appear exactly once, every id in ``matches`` must be a
    test id, each row must include its own id and no id twice. All problems
    are reported together (line numbers as in the CSV file).
    """
    df = (pd.read_csv(submission, dtype=str, keep_default_na=False)
          if not isinstance(submission, pd.DataFrame) else submission.astype(str))
    name = submission if not isinstance(submission, pd.DataFrame) else "submission"
    if list(df.columns) != ["posting_id", "matches"]:
        raise SubmissionError(f"{name}: columns must be exactly posting_id,matches; "
                              f"found {list(df.columns)}")
    known = set(map(str, test_ids))
    problems = []
    seen = df["posting_id"].value_counts()
    for pid in seen[seen > 1].index[:5]:
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
        if len(problems) > 20:
            break
    if problems:
        raise SubmissionError(f"{name}: {len(problems)} problem(s):\n  " +
                              "\n  ".join(problems[:20]))
    return df


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


def load_match_config(path: str | Path) -> tuple[dict, object]:
    """A configuration saved by notebook 03 and its pair classifier (or None)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run notebooks/03_threshold_f1_sweep.ipynb (or "
            "`shopee-match report --only 03`) to choose and save a matching configuration.")
    config = json.loads(path.read_text())
    model = None
    if config.get("pair_model"):
        import joblib

        model = joblib.load(path.parent / config["pair_model"])
    return config, model


def predict_submission(postings: pd.DataFrame, config: dict, pair_model=None,
                       cache_dir: str | Path | None = None, progress: bool = True
                       ) -> pd.Series:
    """Embed ``postings`` as the configuration says and predict each one's match set."""
    from shopee_match.embeddings import embed_dataset
    from shopee_match.matching import matrix_to_sets, predict_matches

    wanted = sorted({*config["fusion_weights"], *(config.get("union") or {})})
    if config.get("pair_threshold") is not None:
        wanted = sorted(set(wanted) | set(config.get("models", {})))
    embeddings = embed_dataset(postings, config["profile"], modalities=wanted,
                               image_size=config["image_size"], cache_dir=cache_dir,
                               progress=progress)
    for m, e in embeddings.items():
        chosen = config.get("models", {}).get(m)
        if chosen and chosen != e.model_id:
            raise ValueError(f"The configuration was tuned with {chosen} for {m}, but this "
                             f"environment gives {e.model_id}; re-run notebook 03.")
    vectors = {m: e.vectors for m, e in embeddings.items()}
    missing = [m for m in wanted if m not in vectors]
    if missing:
        raise ValueError(f"The configuration needs modalities {missing} that these postings "
                         "lack (no images?); re-run notebook 03 on data like this.")
    phash = postings["image_phash"].to_numpy() if "image_phash" in postings else None
    matches = predict_matches(vectors, config, pair_model, phash)
    return matrix_to_sets(matches, postings["posting_id"].astype(str).to_numpy())


def load_test_postings(dataset: str, split_seed: int = 0) -> tuple[pd.DataFrame, Path]:
    """Test postings of a dataset and their folder.

    A dataset with a ``test.csv`` (Kaggle's) is used as it is; a labelled-only
    dataset (the demo) gets its group-aware ``test`` split written in test
    layout to ``<data>/<name>-heldout/`` (with ``solution.csv`` for scoring):
    the same split notebook 03 reports as test.
    """
    from shopee_match.config import dataset_dir
    from shopee_match.data import load_dataset, load_postings, write_test_layout
    from shopee_match.splits import split_by_group

    folder = dataset_dir(dataset)
    if (folder / "test.csv").is_file():
        return load_postings(folder / "test.csv")[0], folder
    postings, _ = load_dataset(dataset, "train")
    split = split_by_group(postings["label_group"], seed=split_seed)
    held_out = folder.parent / f"{folder.name}-heldout"
    write_test_layout(postings[split == "test"].reset_index(drop=True), held_out)
    return load_postings(held_out / "test.csv")[0], held_out


def quick_match_config(dataset: str, profile: str = "offline", image_size: int = 224,
                       split_seed: int = 0, k: int = 50) -> dict:
    """A fallback configuration when notebook 03 has not run: equal-weight fusion of the
    dense modalities with the static threshold that maximises F1 on the val split."""
    import numpy as np

    from shopee_match.data import load_dataset
    from shopee_match.embeddings import embed_dataset
    from shopee_match.matching import sweep
    from shopee_match.neighbors import exact_knn, fuse
    from shopee_match.splits import split_by_group

    postings, _ = load_dataset(dataset, "train")
    embeddings = embed_dataset(postings, profile, image_size=image_size)
    dense = {m: e.vectors for m, e in embeddings.items() if m != "tfidf"}
    val = split_by_group(postings["label_group"], seed=split_seed) == "val"
    weights = {m: 1.0 for m in dense}
    sims, idx = exact_knn(fuse({m: v[val] for m, v in dense.items()}, weights),
                          k=min(k + 1, int(val.sum())))
    table = sweep(sims, idx, postings["label_group"].to_numpy()[val],
                  np.linspace(0.3, 0.98, 69))
    best = table.loc[table["f1"].idxmax()]
    return {"fusion_weights": weights, "k": k, "strategy": "static", "value": best["value"],
            "profile": profile, "image_size": image_size,
            "models": {m: e.model_id for m, e in embeddings.items() if m in dense},
            "chosen_on": {"dataset": dataset, "split_seed": split_seed,
                          "val_f1": best["f1"], "note": "quick fallback, not notebook 03"}}
