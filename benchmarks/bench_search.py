"""Self-search at scale: each way to find every row's k = 51 nearest rows, on the same vectors,
with its seconds and its recall@51 of exact search (on 1,000 sampled rows), side by side.

- ``IVF-Flat, fixed scan (before)``: FAISS IVF-Flat probing lists to scan ~16k rows a query,
  what ``dedupe`` did before the recall target (the baseline of the ratios);
- ``IVF-Flat, probes for the target``: FAISS IVF-Flat over the kit's lists, probing as few
  lists as the recall target needs on the sample (within the kit's scan cap), FAISS's
  per-query scan;
- ``HNSW``: FAISS IndexHNSWFlat (M 32, efConstruction 80), with the smallest efSearch of
  16..512 that reaches the target on the sample;
- ``grouped scan, full top-k per list (before)``: the grouped scan as it was first
  committed: every query's scores against a list take a top-k and a merge;
- ``grouped scan (kit)``: :func:`shopee_match.match.ivf.ivf_knn`, what ``dedupe`` runs now:
  the same lists and probes as the row above, each list scanned as one matrix product, each
  query's nearest list first so that only scores beating its running k-th best are merged.

On three sets of vectors: 1,000,000 random clustered 384-d vectors (``bench_memory``'s
``dedupe-1m``: groups of duplicates, noise beyond), the demo's title vectors and a generated
1,000,000-title catalogue's (MiniLM, int8 as the kit embeds titles by default;
``--titles PATH.npy`` reads them, else they are made here: ~1 h on 2 cores). Target (issue
24): 1M-title search <= 120 s at recall >= 0.99 of exact, against 805 s before.

    python benchmarks/bench_search.py [--rows N] [--sets random demo titles] [--titles F.npy]
        [--methods fixed planned hnsw unpruned grouped] [--recall 0.99]

``make bench`` runs the random and demo sets without HNSW; README (*Performance*) has the
titles and HNSW figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

K = 51
#: what the fixed scan probed for: ~16k rows per query (the old ``IVF_SCAN_ROWS``)
FIXED_SCAN_ROWS = 16_384
METHODS = ("fixed", "planned", "hnsw", "unpruned", "grouped")
SEARCH_TARGET_S = 120


def random_vectors(n: int) -> np.ndarray:
    """bench_memory's dedupe-1m vectors: clustered unit rows, noise beyond a group."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_memory",
                                                  Path(__file__).with_name("bench_memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.clustered(n, 384, seed=3)[0]


def demo_title_vectors() -> np.ndarray:
    """The demo's MiniLM title vectors (int8 models, through the embedding cache)."""
    from shopee_match.data.datasets import load_dataset
    from shopee_match.embed.embeddings import embed_dataset

    postings, _ = load_dataset("demo", "train")
    return embed_dataset(postings, "offline", modalities=["text"], int8=True,
                         progress=False)["text"].vectors


def catalogue_title_vectors(n: int, path: str | None) -> np.ndarray:
    """``n`` generated titles' MiniLM vectors (int8), read from ``path`` when given."""
    if path:
        return np.load(path, mmap_mode="r")[:n]
    from shopee_match.data.demo import generate_titles
    from shopee_match.embed.encoders import make_encoder

    titles = generate_titles(n, seed=0, model_numbers=True)
    encoder = make_encoder("sbert:pypi-minilm", "text", device="cpu", int8=True)
    return encoder.encode(titles)[0]


def fixed_scan(x: np.ndarray, sample, exact) -> dict:
    from shopee_match.match.neighbors import build_index

    n = len(x)
    nlist = int(4 * np.sqrt(n))
    nprobe = int(np.clip(np.ceil(FIXED_SCAN_ROWS * nlist / n), 1, nlist))
    start = time.perf_counter()
    index = build_index(x, "ivf", nlist=nlist, nprobe=nprobe)
    built = time.perf_counter()
    idx = chunked_search(index, x)
    return row(f"nprobe {nprobe} of {nlist}", built - start, time.perf_counter() - built,
               idx[sample], exact)


def planned_probes(x: np.ndarray, lists: tuple, nprobe: int, sample, exact) -> dict:
    import faiss

    centroids, _ = lists
    start = time.perf_counter()
    quantizer = faiss.IndexFlatIP(x.shape[1])
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, x.shape[1], len(centroids), faiss.METRIC_INNER_PRODUCT)
    index.add(x)  # each row into its nearest centroid's list: the kit's lists
    index.nprobe = nprobe
    built = time.perf_counter()
    idx = chunked_search(index, x)
    return row(f"nprobe {nprobe} of {len(centroids)}", built - start,
               time.perf_counter() - built, idx[sample], exact)


def hnsw(x: np.ndarray, target: float, sample, exact) -> dict:
    from shopee_match.match.neighbors import build_index, neighbor_recall, search_index

    start = time.perf_counter()
    index = build_index(x, "hnsw", M=32, ef_construction=80)
    for ef in (16, 32, 64, 128, 256, 512):  # the smallest efSearch reaching the target
        index.hnsw.efSearch = ef
        if neighbor_recall(search_index(index, x[sample], K)[1], exact) >= target:
            break
    tried = time.perf_counter()
    idx = chunked_search(index, x)
    return row(f"efSearch {ef}", tried - start, time.perf_counter() - tried,
               idx[sample], exact)


def grouped(x: np.ndarray, target: float, sample, exact, prune: bool = True) -> dict:
    from shopee_match.match.ivf import grouped_search, ivf_knn

    _, idx, plan = ivf_knn(x, K, target,
                           scan=lambda *args: grouped_search(*args, prune=prune))
    build = sum(plan.seconds.values()) - plan.seconds["search"]
    return row(f"nprobe {plan.nprobe} of {plan.nlist}", build, plan.seconds["search"],
               idx[sample], exact)


def chunked_search(index, x: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    from shopee_match.match.neighbors import search_index

    idx = np.empty((len(x), K), dtype=np.int64)
    for lo in range(0, len(x), chunk):
        idx[lo:lo + chunk] = search_index(index, x[lo:lo + chunk], K)[1]
    return idx


def row(setting: str, build_s: float, search_s: float, found: np.ndarray, exact) -> dict:
    from shopee_match.match.neighbors import neighbor_recall

    return {"setting": setting, "build s": build_s, "search s": search_s,
            "total s": build_s + search_s, "recall@51": neighbor_recall(found, exact)}


def compare(name: str, x: np.ndarray, methods: list[str], target: float) -> None:
    import pandas as pd

    from shopee_match.match.ivf import (
        MAX_SCAN_ROWS,
        RECALL_SAMPLE,
        coarse_lists,
        plan_probes,
        sample_knn,
    )

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    sample = np.random.default_rng(0).choice(n, min(RECALL_SAMPLE, n), replace=False)
    start = time.perf_counter()
    exact = sample_knn(x, sample, K)
    print(f"\n{name}: {n} x {x.shape[1]} vectors; exact top-{K} of {len(sample)} sampled rows "
          f"in {time.perf_counter() - start:.1f} s (the recall reference)", flush=True)
    rows = {}
    if "planned" in methods:  # the kit's lists and probe count, for FAISS's scan of them
        lists = coarse_lists(x, max(1, int(2 * np.sqrt(n))))
        nprobe, _ = plan_probes(x[sample], exact, *lists, target,
                                max(1, MAX_SCAN_ROWS * len(lists[0]) // n))
    runs = {"fixed": ("IVF-Flat, fixed scan (before)", lambda: fixed_scan(x, sample, exact)),
            "planned": ("IVF-Flat, probes for the target",
                        lambda: planned_probes(x, lists, nprobe, sample, exact)),
            "hnsw": ("HNSW", lambda: hnsw(x, target, sample, exact)),
            "unpruned": ("grouped scan, full top-k per list (before)",
                         lambda: grouped(x, target, sample, exact, prune=False)),
            "grouped": ("grouped scan (kit)", lambda: grouped(x, target, sample, exact))}
    for method in methods:
        label, run = runs[method]
        rows[label] = run()
        print(f"  {label}: {rows[label]['setting']}, {rows[label]['total s']:.1f} s, recall "
              f"{rows[label]['recall@51']:.4f}", flush=True)
    table = pd.DataFrame(rows).T
    base = rows.get("IVF-Flat, fixed scan (before)")
    if base:
        table["speed-up (total)"] = [base["total s"] / r["total s"] for r in rows.values()]
    unpruned = rows.get("grouped scan, full top-k per list (before)")
    if unpruned:
        table["search vs full top-k"] = [unpruned["search s"] / r["search s"]
                                         for r in rows.values()]
    print(table.to_string(float_format=lambda v: f"{v:.4f}" if v < 1 else f"{v:.1f}"))
    kit = rows.get("grouped scan (kit)")
    if kit and n >= 1_000_000:
        met = kit["total s"] <= SEARCH_TARGET_S and kit["recall@51"] >= target
        print(f"  target: search <= {SEARCH_TARGET_S} s at recall >= {target}: "
              f"{kit['total s']:.0f} s at {kit['recall@51']:.4f} -> "
              f"{'met' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sets", nargs="+", default=["random", "demo"],
                        choices=["random", "demo", "titles"],
                        help="titles: with --titles, or embedded here (~1 h on 2 cores)")
    parser.add_argument("--titles", help="a .npy of title vectors (rows beyond --rows unused)")
    parser.add_argument("--methods", nargs="+",
                        default=["fixed", "planned", "unpruned", "grouped"],
                        choices=METHODS, help="hnsw when named: its build takes long at 1M")
    parser.add_argument("--recall", type=float, default=0.99)
    args = parser.parse_args(argv)
    from shopee_match.progress import show_logs

    show_logs()
    print(f"self-search, k = {K}, recall target {args.recall}: seconds and recall by method")
    for name in args.sets:
        if name == "random":
            compare(f"random clustered vectors ({args.rows})", random_vectors(args.rows),
                    args.methods, args.recall)
        elif name == "demo":
            compare("demo titles (MiniLM int8)", demo_title_vectors(), args.methods,
                    args.recall)
        else:
            compare(f"generated catalogue titles ({args.titles or 'MiniLM int8'}, {args.rows})",
                    catalogue_title_vectors(args.rows, args.titles), args.methods, args.recall)


if __name__ == "__main__":
    from shopee_match.machine import machine_line

    print(machine_line())  # run alone: name the machine (run_all.py names it once)
    main()
