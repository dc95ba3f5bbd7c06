"""The Ray executor against the local path, one run, same data (issue 21).

- ``embed``: titles and photos per second through the local path (``embed_dataset`` in this
  process) against Ray on one node (2 CPUs: two 1-CPU encoder actors) and on two nodes
  (1 CPU each: one actor per node) of a local ``ray.cluster_utils.Cluster``; a fresh cache
  for every run (the ONNX graphs exported before any is timed), model loading and actor
  start-up included, the vectors checked equal to the local ones.
  Peak resident memory of the driver and of the largest encoder actor on two nodes.
- ``dedupe-1m``: ``dedupe``'s steps after embedding on 1,000,000 title-like vectors (384-d,
  groups of 1-8 as ``bench_memory``'s ``dedupe-1m``): the self-search (IVF planned for
  recall 0.99 of exact) through Ray on the two-node cluster and locally, then threshold,
  mutual pairs, clusters on the driver, ``clusters.parquet`` + ``pairs.parquet``: seconds,
  and peak resident memory of the driver and of the largest Ray worker (sampled; the
  vectors sit once in the object store, counted in each process that maps them). With the
  ``embed`` stage's per-actor memory, this is the 1M-title dedupe through Ray; its
  embedding (~1.5 h through Ray on 2 cores) is not run.

On this machine (2 cores) Ray cannot add compute: every ratio shows its overhead (actor
start-up, model loading per actor, moving batches through the object store), not a
speed-up. What to expect on a cluster: throughput grows with the actors, each actor
embedding at about the per-actor rate printed here on one CPU (or at a GPU's rate with
``--ray-gpus 1``), while the overhead stays roughly constant per run.

    python benchmarks/bench_ray.py [embed] [dedupe-1m]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

N_TITLES = 8000
N_PHOTOS = 1536  # 384 distinct 640 px photos, each listed 4 times (start-up amortised)
IMAGE_SIZE = 224
SPECS = {"image": "timm:tf_efficientnet_lite0:pypi", "text": "sbert:pypi-minilm"}


class PeakMemory:
    """Peak resident memory (GB) of this process and of the largest Ray worker, sampled."""

    def __init__(self, every: float = 0.2):
        self.every, self.driver, self.worker = every, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss / 2**30)
            for proc in psutil.process_iter(["cmdline"]):
                try:
                    if (proc.info["cmdline"] or [""])[0].startswith("ray::"):
                        self.worker = max(self.worker, proc.memory_info().rss / 2**30)
                except psutil.Error:
                    continue
            time.sleep(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def cluster(nodes: int, object_store_gb: float = 1.0):
    """A local Ray cluster of ``nodes`` nodes sharing this machine's CPUs, connected."""
    import ray
    from ray.cluster_utils import Cluster

    cpus = max(1, (os.cpu_count() or 2) // nodes)
    store = int(object_store_gb * 2**30 / nodes)
    made = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus, "include_dashboard": False, "object_store_memory": store})
    for _ in range(nodes - 1):
        made.add_node(num_cpus=cpus, object_store_memory=store)
    ray.init(address=made.address, log_to_driver=False)
    return made


def close(made) -> None:
    import ray

    ray.shutdown()
    made.shutdown()


def bench_embed() -> None:
    from bench_embed import shopee_like_photos

    from shopee_match.distributed.executor import RayExecutor
    from shopee_match.embed.embeddings import embed_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, titles = shopee_like_photos(tmp, 384)
        postings = pd.DataFrame({"posting_id": [f"p{i}" for i in range(N_TITLES)],
                                 "title": (titles * (N_TITLES // len(titles) + 1))[:N_TITLES],
                                 "image_path": (paths * (N_TITLES // len(paths) + 1))[:N_TITLES]})
        photos = postings.head(N_PHOTOS)
        for modality in SPECS:  # the ONNX graphs exported once, before any run is timed
            embed_dataset(postings.tail(8), SPECS, modalities=[modality],
                          image_size=IMAGE_SIZE, cache_dir=tmp / "warm-up", progress=False)
        rates, local, peaks = {}, {}, {}
        for run in ("local", "ray 1 node", "ray 2 nodes"):
            made = None if run == "local" else cluster(1 if "1 node" in run else 2)
            executor = None if made is None else RayExecutor(made.address, progress=False,
                                                             shard_rows=256)
            for modality, table in (("text", postings), ("image", photos)):
                start = time.perf_counter()
                with PeakMemory() as peaks[run, modality]:
                    got = embed_dataset(table, SPECS, modalities=[modality],
                                        image_size=IMAGE_SIZE,
                                        cache_dir=tmp / run.replace(" ", "-"), progress=False,
                                        executor=executor)[modality]
                seconds = time.perf_counter() - start
                rates[run, modality] = len(table) / seconds
                if run == "local":
                    local[modality] = got.vectors
                else:
                    gap = float(np.abs(got.vectors - local[modality]).max())
                    assert gap < 1e-4, (run, modality, gap)
            if made is not None:
                close(made)
        print(f"  embedding {N_TITLES} titles and {N_PHOTOS} 640 px photos ({IMAGE_SIZE} px), "
              "model loading and actor start-up included:")
        for modality, unit in (("text", "titles"), ("image", "photos")):
            base = rates["local", modality]
            print(f"    {unit}: local {base:7.1f}/s" + "".join(
                f" | {run} {rates[run, modality]:7.1f}/s ({rates[run, modality] / base:.2f}x)"
                for run in ("ray 1 node", "ray 2 nodes")))
        print("    per actor on one CPU (2 nodes): titles "
              f"{rates['ray 2 nodes', 'text'] / 2:.1f}/s, photos "
              f"{rates['ray 2 nodes', 'image'] / 2:.1f}/s")
        for modality, unit in (("text", "titles"), ("image", "photos")):
            peak = peaks["ray 2 nodes", modality]
            print(f"    peak memory embedding {unit} on 2 nodes: driver {peak.driver:.2f} GB, "
                  f"largest encoder actor {peak.worker:.2f} GB (local: "
                  f"{peaks['local', modality].driver:.2f} GB)")


def dedupe_vectors(vectors: np.ndarray, executor, out: Path) -> tuple[float, pd.DataFrame]:
    """``dedupe``'s steps after embedding, on ``vectors``: the self-search (k=20, IVF for
    recall 0.99) and a static threshold (on ``executor``'s cluster, or here), then
    ``cluster_matches`` on this process and ``clusters.parquet`` + ``pairs.parquet`` written.
    Seconds taken and the pairs (a CSV copy is written after the clock stops, to compare)."""
    from shopee_match.apply.dedupe import cluster_matches, write_deduped
    from shopee_match.match.config import MatchConfig
    from shopee_match.match.decision import predict_matches
    from shopee_match.match.gallery import Gallery

    start = time.perf_counter()
    config = MatchConfig({"text": "sbert:x"}, {"text": 1.0}, k=20, value=0.8)
    matches = predict_matches(Gallery({"text": vectors}, executor=executor), config)
    ids = np.array([f"p{i}" for i in range(len(vectors))])
    result = cluster_matches(matches, vectors, ids, "bench", 50)
    write_deduped(result, out / "clusters.parquet")
    seconds = time.perf_counter() - start
    write_deduped(result, out / "clusters.csv")
    return seconds, result.pairs


def bench_dedupe_1m() -> None:
    from bench_memory import clustered

    from shopee_match.distributed.executor import RayExecutor

    vectors, _ = clustered(1_000_000, 384, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        made = cluster(2, object_store_gb=4.0)
        executor = RayExecutor(made.address, progress=False, query_rows=65_536)
        with PeakMemory() as ray_peak:
            ray_seconds, ray_pairs = dedupe_vectors(vectors, executor, Path(tmp))
        close(made)
        with PeakMemory() as local_peak:
            local_seconds, pairs = dedupe_vectors(vectors, None, Path(tmp))
        size = {kind: sum(f.stat().st_size for f in Path(tmp).glob(f"*.{kind}")) / 2**20
                for kind in ("parquet", "csv")}
    key = ["posting_id_a", "posting_id_b"]
    same = len(pairs.merge(ray_pairs[key], on=key)) / max(len(pairs), 1)
    print(f"  dedupe of 1,000,000 x 384 title-like vectors after embedding (self-search k=20, "
          f"IVF for recall 0.99, threshold, mutual pairs, clusters capped at 50 on the "
          f"driver, {len(pairs)} pairs written as Parquet: {size['parquet']:.0f} MB, as "
          f"CSV {size['csv']:.0f} MB): local "
          f"{local_seconds:.0f} s, peak {local_peak.driver:.1f} GB | Ray 2 nodes "
          f"{ray_seconds:.0f} s ({local_seconds / ray_seconds:.2f}x), driver peak "
          f"{ray_peak.driver:.1f} GB, largest worker {ray_peak.worker:.1f} GB; {same:.4%} of "
          "the local pairs found through Ray too (the rest: near-ties)")


STAGES = {"embed": bench_embed, "dedupe-1m": bench_dedupe_1m}


def main(argv: list[str] | None = None) -> None:
    import logging

    logging.getLogger("shopee_match").setLevel(logging.WARNING)
    for name in argv or list(STAGES):
        print(f"{name}:", flush=True)
        STAGES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
