"""Latency of ``shopee-match serve`` under a bounded load, over real HTTP on loopback.

Starts the service on the demo catalog (the candidate ``submit`` would use, and the
threshold candidate ``03_thresholds`` when saved: no cross-encoder; title-only requests go to
the title-only candidate the service picks), then sends the same
requests first from one client (the baseline: no queueing) and then from 4 concurrent
clients: title-only and title + photo ``POST /match`` requests built from catalog listings.
Prints p50/p95/p99 latency, requests/s and errors, and the ratio of the concurrent p95 to the
single-client p50. Targets on 2 cores: title-only p95 <= 100 ms, title + photo p95 <= 250 ms,
no errors.

    python benchmarks/bench_serve.py [--dataset demo] [--requests 500] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TARGETS_MS = {"title": 100, "title+photo": 250}


def start_server(dataset: str, candidate: str | None, port: int) -> subprocess.Popen:
    import httpx

    command = [sys.executable, "-m", "shopee_match.cli", "serve", "--dataset", dataset,
               "--port", str(port), "--gray-log", os.devnull]
    if candidate:
        command += ["--candidate", candidate]
    log = Path(tempfile.gettempdir()) / f"bench_serve_{port}.log"  # a pipe would fill and block
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    started = time.perf_counter()
    while time.perf_counter() - started < 900:
        if server.poll() is not None:
            raise RuntimeError(f"the server stopped:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                print(f"  ready in {time.perf_counter() - started:.1f} s")
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server was not ready after 15 min")


def run_load(port: int, requests: list[dict], clients: int) -> tuple[np.ndarray, int, float]:
    """``(latencies in ms, errors, seconds)`` of sending every request, ``clients`` at once."""
    import httpx

    url = f"http://127.0.0.1:{port}/match"

    def worker(share: list[dict]) -> tuple[list[float], int]:
        times, errors = [], 0
        with httpx.Client(timeout=60) as client:
            for kwargs in share:
                start = time.perf_counter()
                response = client.post(url, **kwargs)
                times.append(1000 * (time.perf_counter() - start))
                errors += response.status_code != 200
        return times, errors

    shares = [requests[i::clients] for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(worker, shares))
    seconds = time.perf_counter() - start
    return (np.concatenate([np.array(t) for t, _ in results]), sum(e for _, e in results),
            seconds)


def build_requests(dataset: str, n: int, photos: bool, seed: int = 0) -> list[dict]:
    from shopee_match.data.datasets import catalog_path
    from shopee_match.data.postings import load_postings

    postings, _ = load_postings(catalog_path(dataset, ("train", "test")),
                                check_images="none", progress=False)
    rows = np.random.default_rng(seed).choice(len(postings), n, replace=len(postings) < n)
    out = []
    for row in rows:
        kwargs = {"data": {"title": postings["title"].iloc[row]}}
        if photos:
            kwargs["files"] = {"image": ("photo.jpg",
                                         Path(postings["image_path"].iloc[row]).read_bytes())}
        out.append(kwargs)
    return out


def bench(dataset: str, candidate: str | None, n: int, clients: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"candidate: {candidate or 'the best on val (as submit)'}")
    server = start_server(dataset, candidate, port)
    try:
        import httpx

        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        print(f"  {health['detail']}; listings without a photo: candidate "
              f"{health['titles_candidate'] or health['candidate']}")
        for kind in TARGETS_MS:
            requests = build_requests(dataset, n, photos=kind != "title")
            run_load(port, requests[:10], 1)  # warm-up
            alone, _, _ = run_load(port, requests[:50], 1)
            times, errors, seconds = run_load(port, requests, clients)
            p50, p95, p99 = np.percentile(times, [50, 95, 99])
            base = float(np.median(alone))
            verdict = "met" if p95 <= TARGETS_MS[kind] and not errors else "MISSED"
            print(f"  {kind:<12} {len(times)} requests, {clients} clients: p50 {p50:6.1f} ms  "
                  f"p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  {len(times) / seconds:5.1f} req/s  "
                  f"errors {errors}  | 1 client p50 {base:5.1f} ms, p95/that {p95 / base:4.1f}x"
                  f"  | target p95 <= {TARGETS_MS[kind]} ms: {verdict}")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def ensure_demo(dataset: str) -> None:
    """Generate a demo dataset the benchmark names if it is not there yet."""
    from shopee_match.data.demo import generate_demo
    from shopee_match.data.paths import DEMO_DATASETS, dataset_dir

    folder = dataset_dir(dataset)
    if dataset in DEMO_DATASETS and not (folder / "train.csv").is_file():
        generate_demo(folder, size=DEMO_DATASETS[dataset])


def main(argv: list[str] | None = None) -> None:
    from shopee_match.data.paths import candidates_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv if argv is not None else [])
    ensure_demo(args.dataset)
    print(f"shopee-match serve on {args.dataset}, loopback, {os.cpu_count()} cores")
    bench(args.dataset, None, args.requests, args.clients)
    if (candidates_dir() / "03_thresholds").is_dir():
        bench(args.dataset, "03_thresholds", args.requests, args.clients)


if __name__ == "__main__":
    main(sys.argv[1:])
