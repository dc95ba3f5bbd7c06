"""Peak memory and time per stage at Shopee's scale and at a 1M-listing catalog.

Each stage runs in its own Python process, which reports its peak resident memory
(``getrusage``) and the wall time of each step:

- ``match-70k``: the matching a ``submit`` runs on Kaggle's 70,000 hidden test listings,
  on random clustered vectors (photo 1280-d + title 384-d, as the offline models give):
  fused self-search, pair features + pair classifier, match sets. Embedding is left out
  (``bench_embed.py`` times it). Target <= 6 GB.
- ``submit-70k``: a real ``submit`` of a generated 70,000-listing hidden test set with photos
  (``shopee-match demo --size 70000 --seed 1 --layout test``, made here if missing) with the
  candidate ``BENCH_SUBMIT_CANDIDATE`` (default ``03_thresholds``: frozen encoders) saved by
  the ``shopee-scale`` report in ``SHOPEE_MATCH_ARTIFACTS``; skipped, saying so, without one.
  Embedding included (~15 min on 2 cores). Target <= 6 GB.
- ``dedupe-1m``: dedupe's index and cluster stages on 1,000,000 title vectors (384-d):
  the kit's IVF self-search (``match.ivf``: probes planned for recall 0.99 of exact on a
  sample; beyond a listing's duplicates these vectors' neighbours are random noise, which
  no list order finds, so the scan stops at its cap of ~16k rows a query and warns; the
  share of duplicate pairs found is the figure that matters), static threshold, mutual
  pairs, components capped at 50.
  Target <= 8 GB.
- ``cache-1m``: 1,000,000 × 384 vectors (made up chunk by chunk, no model) written through
  the embedding cache's memory-mapped chunks, against ``cache-1m-joined``: the same chunks
  kept in a list and joined in memory, as the cache did before (the baseline).
- ``embed-100k``: embedding 100,000 generated titles through the chunked, resumable cache
  (memory-mapped chunks).
- ``cluster-10m`` / ``cluster-50m``: the driver's clustering step alone (mutual pairs in,
  ``capped_components`` at 50, ``pairs.parquet`` written and read back) on 10M and 50M
  accepted pairs among 2.5M / 12.5M listings in groups of 8 (1 pair in 100 joins two groups
  at random, making chains to cut): how many edges fit on one driver. No target: the figure
  is bytes per pair.
- ``dedupe-1m-titles`` (only when named: ~50 min on 2 cores): ``dedupe`` end to end on a
  generated 1,000,000-title, text-only catalogue (titles with model numbers, so that every
  group is a distinct product): write and load the CSV, choose the candidate as the CLI
  does, embed the titles through the chunked cache, search, threshold, cluster, write
  ``clusters.csv`` and ``pairs.csv``. Target <= 8 GB. ``BENCH_CACHE_DIR`` keeps the title
  embeddings there (a second run then skips the ~37 min of embedding).

    python benchmarks/bench_memory.py [STAGE ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

import numpy as np

TARGET_GB = {"match-70k": 6, "submit-70k": 6, "dedupe-1m": 8, "cache-1m": 8,
             "cache-1m-joined": 8, "embed-100k": 8, "dedupe-1m-titles": 8}


def clustered(n: int, dim: int, seed: int, noise: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit rows in groups of 1-8 noisy copies of a random centre, and the group of each.
    Filled in chunks of whole groups, so no temporary copy of the whole array is made."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n), rng.integers(1, 9, n))[:n]
    out = np.empty((n, dim), dtype=np.float32)
    lo = 0
    while lo < n:
        hi = min(lo + 65_536, n)
        while hi < n and labels[hi] == labels[hi - 1]:  # a group stays in one chunk
            hi += 1
        part = labels[lo:hi]
        local = np.random.default_rng([seed, lo])
        centres = local.normal(size=(part[-1] - part[0] + 1, dim))
        block = centres[part - part[0]] + noise * local.normal(size=(hi - lo, dim))
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
        lo = hi
    return out, labels


def peak_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def stage_match_70k() -> dict:
    from shopee_match.match.config import MatchConfig, SecondStage
    from shopee_match.match.decision import candidate_pair_features, predict_matches
    from shopee_match.match.gallery import Gallery
    from shopee_match.match.matrices import matrix_to_sets
    from shopee_match.match.second_stage import PairClassifier

    steps = {}
    t = time.perf_counter()
    image, labels = clustered(70_000, 1280, seed=1)
    text, _ = clustered(70_000, 384, seed=2)
    vectors = {"image": image, "text": text}
    steps["generate vectors"] = time.perf_counter() - t
    config = MatchConfig({"image": "timm:x", "text": "sbert:x"}, {"image": 0.5, "text": 0.5},
                         k=50, value=0.5,
                         second_stage=SecondStage("pair_classifier", 0.5, "m.joblib"))
    t = time.perf_counter()
    gallery = Gallery(vectors)
    pairs = candidate_pair_features(gallery, config)
    i, j = pairs.i, pairs.j
    steps[f"self-search + {len(i)} pair features"] = time.perf_counter() - t
    t = time.perf_counter()
    sims, idx = gallery.neighbors(config.fusion_weights, config.k + 1)
    check = float16_check(sims, idx)
    steps[check] = time.perf_counter() - t
    t = time.perf_counter()
    model = PairClassifier.fit(pairs.features.iloc[::20], (labels[i] == labels[j])[::20])
    matches = predict_matches(gallery, config, model)
    steps["pair classifier + match matrix"] = time.perf_counter() - t
    t = time.perf_counter()
    sets = matrix_to_sets(matches, [f"test_{r}" for r in range(70_000)])
    steps[f"match sets ({int(sets.map(len).mean() * 10) / 10} per listing)"] = (
        time.perf_counter() - t)
    return steps


def float16_check(sims: np.ndarray, idx: np.ndarray) -> str:
    """How many accept decisions float16 similarities would change: at each static threshold of
    notebook 03's grid (0.30, 0.31, ..., 0.98) and each dynamic multiplier (0.0, 0.5, ..., 3.0),
    against float32, with the largest rounding error and the lists' bytes at int32/float32."""
    from shopee_match.match.thresholds import dynamic_accept, static_accept

    rounded = sims.astype(np.float16).astype(np.float32)
    flipped = decided = 0
    for accept, values in ((static_accept, np.linspace(0.3, 0.98, 69)),
                           (dynamic_accept, np.arange(0, 3.01, 0.5))):
        for value in values:
            flipped += int((accept(sims, idx, value) != accept(rounded, idx, value)).sum())
            decided += sims.size
    return (f"float16 similarities: max error {np.abs(rounded - sims).max():.1e}, "
            f"{flipped} of {decided} accept decisions changed ({flipped / decided:.1e}); "
            f"lists {(sims.nbytes + idx.nbytes) / 2**20:.0f} MB ({idx.dtype} indices)")


def stage_submit_70k() -> dict:
    import os

    from shopee_match.apply.candidates import NoCandidateError, pick_candidate
    from shopee_match.apply.pipeline import apply_candidate
    from shopee_match.apply.submission import read_submission, write_submission
    from shopee_match.data.datasets import load_test_postings, train_fingerprint
    from shopee_match.data.demo import generate_demo
    from shopee_match.data.paths import artifacts_dir, data_dir
    from shopee_match.embed.embeddings import embed_dataset
    from shopee_match.match.metrics import row_f1

    steps = {}
    t = time.perf_counter()
    try:
        candidate, _ = pick_candidate(train_fingerprint("demo-shopee"), 0,
                                      os.environ.get("BENCH_SUBMIT_CANDIDATE", "03_thresholds"))
    except NoCandidateError as err:
        return {f"SKIPPED: no shopee-scale candidate ({str(err).splitlines()[0]}); run `make "
                "report PROFILE=shopee-scale` first": time.perf_counter() - t}
    folder = generate_demo(data_dir() / "demo-70000-test", 70_000, seed=1, progress=False,
                           layout="test")
    postings, _ = load_test_postings("demo-shopee", test=folder / "test.csv")
    steps[f"test set ({len(postings)} listings) + candidate {candidate.name}"] = (
        time.perf_counter() - t)
    config = candidate.config
    specs = {m: s for m, s in config.encoders.items() if m != "tfidf"}
    for modality in config.modalities:  # into the embedding cache, one modality at a time
        t = time.perf_counter()
        embed_dataset(postings, specs, modalities=[modality], image_size=config.image_size,
                      progress=False)
        steps[f"embed {modality} ({config.encoders[modality]})"] = time.perf_counter() - t
    t = time.perf_counter()
    matches = apply_candidate(postings, candidate, progress=False).match_sets()
    out = write_submission(matches, artifacts_dir() / "submission-70k.csv")
    f1 = row_f1(read_submission(out), read_submission(folder / "solution.csv"))
    steps[f"read the cache, match, write submission (row-wise F1 {f1:.4f})"] = (
        time.perf_counter() - t)
    return steps


def stage_dedupe_1m() -> dict:
    from scipy import sparse

    from shopee_match.match.components import capped_components
    from shopee_match.match.config import MatchConfig
    from shopee_match.match.decision import predict_matches
    from shopee_match.match.gallery import Gallery

    steps = {}
    t = time.perf_counter()
    text, labels = clustered(1_000_000, 384, seed=3)
    steps["generate 1M x 384 vectors"] = time.perf_counter() - t
    config = MatchConfig({"text": "sbert:x"}, {"text": 1.0}, k=20, value=0.8)
    t = time.perf_counter()
    matches = predict_matches(Gallery({"text": text}), config)
    steps["IVF self-search + threshold"] = time.perf_counter() - t
    t = time.perf_counter()
    mutual = matches.multiply(matches.T).tocsr()
    upper = sparse.triu(mutual, k=1).tocoo()
    clusters, cut = capped_components(upper.row, upper.col, np.ones(len(upper.row)),
                                      len(labels), 50)
    same = labels[upper.row] == labels[upper.col]
    sizes = np.bincount(labels)
    duplicates = int((sizes * (sizes - 1) // 2).sum())  # pairs inside the generated groups
    steps[f"mutual pairs + clusters ({len(upper.row)} pairs, {same.mean():.3f} same group, "
          f"{same.sum() / duplicates:.3f} of the {duplicates} duplicate pairs, {cut} cut)"
          ] = time.perf_counter() - t
    return steps


def stage_cluster(n_pairs: int) -> dict:
    import pandas as pd

    from shopee_match.match.components import capped_components

    steps = {}
    rng = np.random.default_rng(0)
    n = n_pairs // 4
    t = time.perf_counter()
    a = rng.integers(0, n, n_pairs)
    b = (a // 8) * 8 + (a % 8 + rng.integers(1, 8, n_pairs)) % 8  # another of a's group
    chain = rng.random(n_pairs) < 0.01
    b[chain] = rng.integers(0, n, int(chain.sum()))  # or anywhere: chains between groups
    b = np.minimum(b, n - 1)
    keep = a != b
    a, b = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    strength = rng.random(len(a)).astype(np.float32)
    steps[f"generate {len(a)} pairs among {n} listings"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        pd.DataFrame({"a": a, "b": b, "score": strength}).to_parquet(f"{root}/pairs.parquet")
        del a, b, strength
        pairs = pd.read_parquet(f"{root}/pairs.parquet")
        steps["write pairs.parquet and read it back"] = time.perf_counter() - t
    t = time.perf_counter()
    clusters, cut = capped_components(pairs["a"].to_numpy(), pairs["b"].to_numpy(),
                                      pairs["score"].to_numpy(), n, 50)
    sizes = np.bincount(clusters)
    steps[f"capped_components at 50 ({int((sizes > 1).sum())} clusters of 2+, largest "
          f"{sizes.max()}, {cut} pairs cut)"] = time.perf_counter() - t
    return steps


def stage_dedupe_1m_titles(n: int = 1_000_000) -> dict:
    import os

    import pandas as pd

    from shopee_match.apply.choosing import choose_candidate
    from shopee_match.apply.dedupe import dedupe, write_deduped
    from shopee_match.apply.pipeline import embed_for
    from shopee_match.data.demo import generate_titles
    from shopee_match.data.postings import load_postings

    steps = {}
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        titles = generate_titles(n, seed=0, model_numbers=True)
        csv = f"{root}/catalog.csv"
        pd.DataFrame({"posting_id": [f"p{i}" for i in range(len(titles))],
                      "title": titles}).to_csv(csv, index=False)
        del titles
        steps[f"generate {n} titles, write catalog.csv"] = time.perf_counter() - t
        t = time.perf_counter()
        postings, _ = load_postings(csv, progress=False)
        steps["load and check catalog.csv"] = time.perf_counter() - t
        t = time.perf_counter()
        candidate = choose_candidate(postings, "demo")
        steps[f"choose candidate ({candidate.name}: "
              f"{', '.join(candidate.config.modalities)})"] = time.perf_counter() - t
        cache = os.environ.get("BENCH_CACHE_DIR") or f"{root}/cache"
        t = time.perf_counter()
        embed_for(postings, candidate.config, cache, progress=False)
        steps[f"embed {n} titles (chunked, memory-mapped cache)"] = time.perf_counter() - t
        t = time.perf_counter()
        result = dedupe(postings, candidate, progress=False, cache_dir=cache)
        sizes = result.clusters.drop_duplicates("cluster_id")["cluster_size"]
        steps[f"dedupe on the cached vectors: search, threshold, clusters "
              f"({len(result.pairs)} mutual pairs, {int((sizes > 1).sum())} clusters of 2+, "
              f"largest {sizes.max()}, {int(result.pairs['cut'].sum())} cut)"
              ] = time.perf_counter() - t
        t = time.perf_counter()
        write_deduped(result, f"{root}/clusters.csv")
        steps["write clusters.csv + pairs.csv"] = time.perf_counter() - t
    return steps


def random_chunk(rows: slice, dim: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors standing in for an encoder's output on ``rows``."""
    vectors = np.random.default_rng(rows.start).normal(size=(rows.stop - rows.start, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return vectors, np.ones(len(vectors), bool)


def stage_cache_1m() -> dict:
    from shopee_match.embed.cache import EmbeddingCache, cache_meta

    ids = [f"p{i}" for i in range(1_000_000)]
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        vectors, _ = EmbeddingCache(root).compute_chunked(cache_meta("bench", "1m", {}), ids,
                                                          random_chunk, 8192)
    return {f"{vectors.shape[0]} x {vectors.shape[1]} through memory-mapped chunks, saved":
            time.perf_counter() - t}


def stage_cache_1m_joined() -> dict:
    from shopee_match.embed.cache import EmbeddingCache, cache_meta

    n = 1_000_000
    t = time.perf_counter()
    chunks = [random_chunk(slice(lo, min(lo + 8192, n))) for lo in range(0, n, 8192)]
    vectors = np.concatenate([c[0] for c in chunks])
    ok = np.concatenate([c[1] for c in chunks])
    with tempfile.TemporaryDirectory() as root:
        EmbeddingCache(root).save(cache_meta("bench", "1m", {}), [f"p{i}" for i in range(n)],
                                  vectors, ok)
    return {f"{vectors.shape[0]} x {vectors.shape[1]} as chunks joined in memory, saved":
            time.perf_counter() - t}


def stage_embed_100k() -> dict:
    import pandas as pd

    from shopee_match.data.demo import generate_titles
    from shopee_match.embed.embeddings import embed_dataset

    steps = {}
    t = time.perf_counter()
    titles = generate_titles(100_000, seed=0)
    postings = pd.DataFrame({"posting_id": [f"p{i}" for i in range(len(titles))],
                             "title": titles})
    steps["generate 100k titles"] = time.perf_counter() - t
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        embed_dataset(postings, {"text": "sbert:pypi-minilm"}, modalities=["text"],
                      cache_dir=cache, chunk_rows=8192, progress=False)
    steps["embed 100k titles (MiniLM, chunked cache)"] = time.perf_counter() - t
    return steps


STAGES = {"match-70k": stage_match_70k, "submit-70k": stage_submit_70k,
          "dedupe-1m": stage_dedupe_1m, "cache-1m": stage_cache_1m,
          "cache-1m-joined": stage_cache_1m_joined, "embed-100k": stage_embed_100k,
          "cluster-10m": lambda: stage_cluster(10_000_000),
          "cluster-50m": lambda: stage_cluster(50_000_000),
          "dedupe-1m-titles": stage_dedupe_1m_titles}
#: stages run only when named: about 50 min on 2 cores (most of it embedding the titles)
LONG_STAGES = ("dedupe-1m-titles",)


def run_stage(name: str) -> None:
    """In a fresh process: run one stage and print its steps and peak memory as JSON."""
    steps = STAGES[name]()
    print(json.dumps({"steps": steps, "peak_gb": peak_gb()}))


def main(argv: list[str] | None = None) -> None:
    names = argv or [name for name in STAGES if name not in LONG_STAGES]
    print("peak resident memory and time per step, one process per stage")
    peaks = {}
    for name in names:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--stage", name],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"  {name}: FAILED\n{done.stderr[-2000:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        skipped = [step for step in result["steps"] if step.startswith("SKIPPED")]
        if skipped:
            print(f"  {name}: {skipped[0]}")
            continue
        peaks[name] = result["peak_gb"]
        target = TARGET_GB.get(name)
        verdict = ("no target" if target is None else
                   f"target <= {target} GB: {'met' if result['peak_gb'] <= target else 'MISSED'}")
        print(f"  {name}: peak {result['peak_gb']:.2f} GB ({verdict}), "
              f"{time.perf_counter() - start:.0f} s in all")
        for step, seconds in result["steps"].items():
            print(f"    {seconds:7.1f} s  {step}")
        for line in done.stderr.splitlines():
            if "recall@" in line:
                print(f"    {line.removeprefix('shopee-match: ')}")
    for name in set(LONG_STAGES) - set(names):
        print(f"  {name}: not run by default (~50 min on 2 cores); "
              f"`python benchmarks/bench_memory.py {name}` runs it")
    if {"cluster-10m", "cluster-50m"} <= peaks.keys():
        per_pair = (peaks["cluster-50m"] - peaks["cluster-10m"]) * 2**30 / 40e6
        print(f"  clustering on the driver: {per_pair:.0f} bytes per accepted pair (50M vs "
              f"10M pairs), so {16 * 2**30 / per_pair / 1e6:.0f}M pairs fit in 16 GB")
    if {"cache-1m", "cache-1m-joined"} <= peaks.keys():
        print(f"  memory-mapped cache: {peaks['cache-1m'] / peaks['cache-1m-joined']:.2f} x "
              "the peak of chunks joined in memory")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--stage":
        run_stage(sys.argv[2])
    else:
        from shopee_match.machine import machine_line

        print(machine_line())  # run alone: name the machine (run_all.py names it once)
        main(sys.argv[1:])
