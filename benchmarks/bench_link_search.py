"""Linking two shops at scale: each shop's listings searched among the other's, exact (what
``link``, ``submit`` and ``dedupe`` did for a catalog with sources at any size) against the
kit's IVF search planned for a recall target (what they do above 200,000 listings of the
other shops now), on the same vectors: seconds, recall@k of the exact lists, and the share
of true matches in the other shop (same group) that the lists hold: what linking needs.

The vectors are ``bench_memory``'s clustered ones (groups of 1-8 noisy copies of a centre,
noise beyond), split between two shops at random, so most groups have listings in both.

    python benchmarks/bench_link_search.py [--rows N] [--k 51] [--recall 0.99]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def two_shops(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` clustered 384-d unit rows, their groups and a shop (0 or 1) for each."""
    from bench_memory import clustered

    x, groups = clustered(n, 384, seed=3)  # bench_search's random set
    return x, groups, np.random.default_rng(7).integers(0, 2, n).astype(np.int32)


def true_matches_found(idx: np.ndarray, groups: np.ndarray, shops: np.ndarray) -> float:
    """Share of the true cross-shop pairs (same group, other shop) in the lists."""
    from shopee_match.match.metrics import blocking_misses

    found = blocking_misses(idx, groups, shops)
    return found["offered"] / max(found["true_pairs"], 1)


def main(argv: list[str] | None = None) -> None:
    from shopee_match.match.neighbors import neighbor_recall
    from shopee_match.match.sources import exact_lists, source_lists

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=51)
    parser.add_argument("--recall", type=float, default=0.99)
    args = parser.parse_args(argv if argv is not None else [])
    x, groups, shops = two_shops(args.rows)
    print(f"{args.rows:,} listings in two shops ({np.bincount(shops).tolist()}), 384-d, "
          f"k = {args.k}, each shop against the other")
    start = time.perf_counter()
    exact = exact_lists(x, None, args.k, shops)
    exact_s = time.perf_counter() - start
    print(f"  exact (before)        {exact_s:8.1f} s  (the reference)  true matches found "
          f"{true_matches_found(exact[1], groups, shops):.4f}")
    start = time.perf_counter()
    _, idx = source_lists(x, shops, args.k, args.recall, exact_max_rows=0)
    ivf_s = time.perf_counter() - start
    recall = neighbor_recall(idx[:, 1:], exact[1][:, 1:])
    print(f"  IVF for recall {args.recall}  {ivf_s:8.1f} s  recall {recall:.4f} (every row)  "
          f"true matches found {true_matches_found(idx, groups, shops):.4f}  "
          f"| {exact_s / ivf_s:.1f}x exact")


if __name__ == "__main__":
    import sys

    from shopee_match.machine import machine_line

    print(machine_line())  # run alone: name the machine (run_all.py names it once)
    main(sys.argv[1:])
