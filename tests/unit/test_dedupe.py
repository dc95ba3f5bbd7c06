"""Deduplicating an unlabelled catalog: clusters, pairs, oversized clusters, the CLI."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopee_match.apply.dedupe import MAX_CLUSTER, Deduped
from shopee_match.cli import main


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """A second generated dataset (another seed) to choose the candidate on."""
    from shopee_match.data.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("train") / "demo-600", size=600, seed=1,
                         progress=False)


def unlabelled_catalog(data_root: Path, folder: Path, photos: bool) -> tuple[Path, pd.Series]:
    """demo-tiny without its labels (and without photos unless ``photos``), and the labels."""
    source = data_root / "demo-tiny"
    df = pd.read_csv(source / "train.csv")
    folder.mkdir(parents=True, exist_ok=True)
    drop = ["label_group"] + ([] if photos else ["image", "image_phash"])
    df.drop(columns=drop).to_csv(folder / "catalog.csv", index=False)
    if photos:
        shutil.copytree(source / "train_images", folder / "catalog_images")
    return folder / "catalog.csv", df.set_index("posting_id")["label_group"]


def pair_agreement(clusters: pd.DataFrame, truth: pd.Series) -> tuple[float, float]:
    """Precision and recall of "same cluster" as a prediction of "same product" over all
    pairs of listings."""
    cluster = clusters.set_index("posting_id")["cluster_id"].loc[truth.index].to_numpy()
    label = truth.to_numpy()
    same_cluster = cluster[:, None] == cluster[None, :]
    same_label = label[:, None] == label[None, :]
    off = ~np.eye(len(label), dtype=bool)
    tp = (same_cluster & same_label & off).sum()
    return tp / max((same_cluster & off).sum(), 1), tp / (same_label & off).sum()


@pytest.mark.parametrize("photos", [True, False], ids=["photos", "titles-only"])
def test_dedupe_clusters_true_duplicates_together(data_root, labelled, tmp_path, monkeypatch,
                                                  capsys, photos):
    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path / "artifacts"))
    csv, truth = unlabelled_catalog(data_root, tmp_path / "catalog", photos)
    out = tmp_path / "out" / "clusters.csv"
    assert main(["dedupe", str(csv), "--trained-on", str(labelled), "--out", str(out)]) == 0
    clusters = pd.read_csv(out, dtype={"posting_id": str})
    pairs = pd.read_csv(out.with_name("pairs.csv"), dtype={"posting_id_a": str,
                                                            "posting_id_b": str})
    assert list(clusters.columns) == ["posting_id", "cluster_id", "cluster_size"]
    assert clusters["posting_id"].tolist() == truth.index.tolist()  # every listing, in order
    sizes = clusters.groupby("cluster_id")["posting_id"].transform("size")
    assert (sizes == clusters["cluster_size"]).all()
    precision, recall = pair_agreement(clusters, truth)
    sizes_true = truth.value_counts()
    chance = ((sizes_true * (sizes_true - 1)).sum() / (len(truth) * (len(truth) - 1)))
    assert recall > 0.5, recall  # true duplicates share a cluster more often than not
    assert precision > 5 * chance, (precision, chance)  # and clusters are not one blob
    cluster_of = dict(zip(clusters["posting_id"], clusters["cluster_id"]))
    kept, cut = pairs[~pairs["cut"]], pairs[pairs["cut"]]
    assert all(cluster_of[a] == cluster_of[b] == c for a, b, c in
               zip(kept["posting_id_a"], kept["posting_id_b"], kept["cluster_id"]))
    assert all(cluster_of[a] != cluster_of[b] for a, b in
               zip(cut["posting_id_a"], cut["posting_id_b"]))
    assert clusters["cluster_size"].max() <= 50  # chains cut at their weakest pairs
    assert pairs["similarity"].between(-1, 1).all()
    printed = capsys.readouterr().out
    assert "clusters with candidate" in printed and "largest clusters" in printed


def test_cut_pairs_and_size_bands_are_reported():
    ids = [f"p{i}" for i in range(60)]
    clusters = pd.DataFrame({"posting_id": ids, "cluster_id": [0] * 50 + [1] * 5 + [2, 2, 3,
                                                                                4, 5],
                             "cluster_size": [50] * 50 + [5] * 5 + [2, 2, 1, 1, 1]})
    pairs = pd.DataFrame({"posting_id_a": ["p0", "p49"], "posting_id_b": ["p1", "p50"],
                          "similarity": [0.9, 0.6], "score": [np.nan, np.nan],
                          "cluster_id": [0, 0], "cut": [False, True]})
    result = Deduped(clusters, pairs, "x", MAX_CLUSTER)
    sizes = result.sizes()
    assert sizes.loc["1 (no match)", "clusters"] == 3 and sizes.loc["2", "listings"] == 2
    assert sizes.loc[f"11-{MAX_CLUSTER}", "listings"] == 50
    assert sizes.loc["3-5", "clusters"] == 1
    postings = pd.DataFrame({"posting_id": ids, "title": [f"t{i}" for i in range(60)]})
    assert "WARNING: 1 accepted pair(s) were cut so that no cluster holds more than 50" in \
        result.summary(postings)
    assert "WARNING" not in Deduped(clusters, pairs.assign(cut=False), "x", 50).summary(postings)


def test_dedupe_of_a_missing_catalog_fails_with_one_line(tmp_path, capsys):
    assert main(["dedupe", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv not found" in capsys.readouterr().err


def test_a_pair_gets_the_higher_score_of_its_two_directions_or_nan():
    from shopee_match.apply.dedupe import undirected_scores

    i, j = np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2])
    scores = np.array([0.2, 0.9, 0.6, 0.4])
    got = undirected_scores(i, j, scores, np.array([0, 2, 0]), np.array([1, 3, 4]))
    np.testing.assert_array_equal(got[:2], [0.9, 0.6])
    assert np.isnan(got[2])  # (0, 4) was never scored


def full_disk(*args, **kwargs):
    """Stands in for a writer on a full disk: the file is created, nothing gets into it."""
    target = args[0]
    if isinstance(target, (str, Path)):
        Path(target).touch()
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_never_poisons_the_cache_nor_splits_the_outputs(data_root, labelled,
                                                                    tmp_path, monkeypatch,
                                                                    capsys):
    """Through the CLI: dedupe with its embedding cache on a full disk still gives its
    result (with a warning) and leaves nothing that a later run trips on; and a run that
    cannot write pairs.csv keeps the previous run's clusters.csv and pairs.csv together."""
    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path / "artifacts"))
    csv, _ = unlabelled_catalog(data_root, tmp_path / "catalog", photos=False)
    out = tmp_path / "out" / "clusters.csv"
    command = ["dedupe", str(csv), "--trained-on", str(labelled), "--out", str(out)]
    with monkeypatch.context() as disk:
        for name in ("save", "savez"):
            disk.setattr(np, name, full_disk)
        disk.setattr(np.lib.format, "open_memmap", full_disk)
        with pytest.warns(UserWarning, match="Cannot write the embedding cache"):
            assert main(command) == 0
    first = out.read_bytes(), out.with_name("pairs.csv").read_bytes()
    assert main(command) == 0  # space again: the half-written cache does not stop it
    assert (out.read_bytes(), out.with_name("pairs.csv").read_bytes()) == first
    assert list((tmp_path / "artifacts" / "embeddings").glob("*.npz"))  # and now it is kept
    writer = pd.DataFrame.to_csv

    def to_csv(frame, path=None, *args, **kwargs):
        if "pairs" in Path(str(path)).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return writer(frame, path, *args, **kwargs)

    capsys.readouterr()
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    assert main(command + ["--max-cluster", "2"]) == 2  # other clusters, not written
    assert "No space left" in capsys.readouterr().err
    assert (out.read_bytes(), out.with_name("pairs.csv").read_bytes()) == first
    assert sorted(p.name for p in out.parent.iterdir()) == ["clusters.csv", "pairs.csv"]


def test_a_column_mapping_naming_a_column_the_file_lacks_stops_with_its_name(data_root,
                                                                              tmp_path,
                                                                              capsys):
    csv, _ = unlabelled_catalog(data_root, tmp_path / "catalog", photos=False)
    assert main(["dedupe", str(csv), "--columns", "image=photo"]) == 2
    err = capsys.readouterr().err
    assert "names ['photo'], which the file does not have (for ['image'])" in err


def test_a_parquet_catalog_dedupes_as_its_csv_into_parquet_files(data_root, labelled,
                                                                 tmp_path, monkeypatch):
    """The same catalog as Parquet, deduped with ``--out clusters.parquet``: the clusters and
    pairs of the CSV run, as Parquet files (typed columns)."""
    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path / "artifacts"))
    csv, _ = unlabelled_catalog(data_root, tmp_path / "catalog", photos=False)
    parquet = csv.with_suffix(".parquet")
    pd.read_csv(csv, dtype=str, keep_default_na=False).to_parquet(parquet, index=False)
    common = ["--trained-on", str(labelled)]
    assert main(["dedupe", str(csv), *common, "--out", str(tmp_path / "csv" / "clusters.csv")
                 ]) == 0
    assert main(["dedupe", str(parquet), *common,
                 "--out", str(tmp_path / "pq" / "clusters.parquet")]) == 0
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == ["clusters.parquet",
                                                                   "pairs.parquet"]
    ids = {c: str for c in ("posting_id", "posting_id_a", "posting_id_b")}
    for name in ("clusters", "pairs"):
        want = pd.read_csv(tmp_path / "csv" / f"{name}.csv", dtype=ids)
        got = pd.read_parquet(tmp_path / "pq" / f"{name}.parquet")
        assert len(got) > 10
        pd.testing.assert_frame_equal(got.astype({c: str for c in ids if c in got}), want,
                                      check_dtype=False)  # similarity: float32 in Parquet
