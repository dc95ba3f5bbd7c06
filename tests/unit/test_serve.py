"""The HTTP service: endpoints through FastAPI's TestClient, and one real server on loopback."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service import CONFIGS, candidate, png_header

from shopee_match.apply.service import GrayBand, MatchService
from shopee_match.serve import Limits, create_app


@pytest.fixture(scope="module")
def postings(data_root):
    from shopee_match.data.datasets import load_dataset

    return load_dataset(str(data_root / "demo-tiny"), "train")[0]


@pytest.fixture(scope="module")
def service(postings):
    return MatchService.load(postings, candidate(CONFIGS["dynamic+min2+union"], "tiny-dynamic"),
                             progress=False)


def wait_ready(client, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.get("/health")
        if response.status_code == 200:
            return response.json()
        time.sleep(0.05)
    raise AssertionError(f"not ready: {response.json()}")


def photo(postings, row: int) -> bytes:
    with open(postings["image_path"].iloc[row], "rb") as f:
        return f.read()


@pytest.fixture
def client(service, tmp_path):
    app = create_app(lambda: service, GrayBand(0.5, 0.9), tmp_path / "gray.jsonl",
                     Limits(max_image_bytes=200_000))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def test_match_answers_title_image_or_both(client, postings):
    title, own = postings["title"].iloc[5], postings["posting_id"].iloc[5]
    image = photo(postings, 5)
    both = client.post("/match", data={"title": title}, files={"image": ("a.jpg", image)})
    assert both.status_code == 200, both.text
    body = both.json()
    assert body["candidate"] == "tiny-dynamic" and body["missing"] == []
    first = body["neighbours"][0]
    assert first["posting_id"] == own and first["similarity"] == pytest.approx(1, abs=1e-4)
    assert set(first["similarities"]) == {"image", "text", "tfidf"}
    accepted = [n["posting_id"] for n in body["neighbours"] if n["accepted"]]
    assert body["matches"][:len(accepted)] == accepted  # nearest first, then union's others
    assert body["duplicate"] == bool(body["matches"])
    assert len(body["neighbours"]) == CONFIGS["dynamic+min2+union"].k
    title_only = client.post("/match", data={"title": title}).json()
    assert title_only["missing"] == ["image"]
    assert title_only["neighbours"][0]["similarities"]["image"] is None
    image_only = client.post("/match", files={"image": ("a.jpg", image)}).json()
    assert image_only["missing"] == ["text", "tfidf"]
    assert image_only["neighbours"][0]["posting_id"] in postings["posting_id"][
        postings["image"] == postings["image"].iloc[5]].tolist()


@pytest.mark.parametrize("request_kwargs, status, message", [
    ({}, 422, "needs a title or an image"),
    ({"data": {"title": "   "}}, 422, "needs a title or an image"),
    ({"files": {"image": ("x.jpg", b"not a photo at all")}}, 415, "not an image"),
    ({"files": {"image": ("x.jpg", b"")}}, 422, "empty"),
    ({"files": {"image": ("x.png", png_header(20_000, 20_000))}}, 413, "too large"),
    ({"files": {"image": ("x.png", png_header(9000, 9000))}}, 413, "above the limit"),
    ({"files": {"image": ("x.jpg", b"\xff" * 200_001)}}, 413, "over the limit of 200000"),
], ids=["nothing", "blank title", "not an image", "empty image", "bomb", "too many pixels",
        "too many bytes"])
def test_bad_input_gets_a_4xx_with_a_message(client, request_kwargs, status, message):
    response = client.post("/match", **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert client.get("/health").status_code == 200  # still serving


def test_a_request_too_large_to_read_or_a_failing_service_gets_an_answer(service):
    class Broken:
        def __getattr__(self, name):
            return getattr(service, name)

        def __len__(self):
            return len(service)

        def match(self, listing):
            raise RuntimeError("index gone")

    with TestClient(create_app(lambda: Broken(), limits=Limits(max_image_bytes=1000)),
                    raise_server_exceptions=False) as c:
        wait_ready(c)
        big = c.post("/match", data={"title": "kopi"}, files={"image": ("a", b"x" * 1_100_000)})
        assert big.status_code == 413 and "too large" in big.json()["detail"]
        failed = c.post("/match", data={"title": "kopi"})
        assert failed.status_code == 500 and "index gone" in failed.json()["detail"]
        assert c.get("/health").status_code == 200  # still serving
        assert 'shopee_match_errors_total{endpoint="/match",status="500"} 1.0' in c.get(
            "/metrics").text


def test_a_huge_title_is_cut_and_said_so(client):
    response = client.post("/match", data={"title": "kopi kapal api " * 7000})
    assert response.status_code == 200
    assert any("cut from" in w for w in response.json()["warnings"])


def test_pair_answers_whether_two_listings_are_duplicates(client, postings):
    a, other = postings.iloc[5], postings.iloc[40]
    same = client.post("/pair", data={"title_a": a["title"], "title_b": a["title"]},
                       files={"image_a": ("a.jpg", photo(postings, 5)),
                              "image_b": ("b.jpg", photo(postings, 5))}).json()
    assert same["duplicate"] and same["a_accepts_b"] and same["b_accepts_a"]
    assert same["similarity"] == pytest.approx(1, abs=1e-5)
    assert same["score_a_b"] is None  # a threshold candidate has no second-stage score
    different = client.post("/pair", data={"title_a": a["title"], "title_b": other["title"]})
    body = different.json()
    assert different.status_code == 200 and body["similarities"]["image"] is None
    assert body["similarities"]["text"] < 1
    bad = client.post("/pair", data={"title_a": "kopi"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("listing b:")


def test_catalog_adds_new_ids_and_refuses_known_ones(client, service):
    size = client.get("/health").json()["catalog_size"]
    added = client.post("/catalog", data={"posting_id": "new-listing",
                                          "title": "Kopi Kapal Api Special 165g"})
    assert added.status_code == 201, added.text
    assert added.json()["catalog_size"] == size + 1
    assert client.get("/health").json()["catalog_size"] == size + 1
    found = client.post("/match", data={"title": "Kopi Kapal Api Special 165g"}).json()
    assert found["neighbours"][0]["posting_id"] == "new-listing"
    again = client.post("/catalog", data={"posting_id": "new-listing", "title": "other"})
    assert again.status_code == 409 and "already in the catalog" in again.json()["detail"]
    known = client.post("/catalog", data={"posting_id": service.ids[0], "title": "x"})
    assert known.status_code == 409
    assert client.post("/catalog", data={"title": "no id"}).status_code == 422


def test_a_catalog_of_two_shops_answers_with_the_other_shops_listings(postings, tmp_path):
    """Linked across two shops, requests name their shop: /match answers with the other
    shop's listings, a listing added from one shop is found from the other only, and a
    missing shop or a pair from one shop is a 422 saying what to send."""
    shops = postings.assign(source=["A" if i % 2 else "B" for i in range(len(postings))])
    service = MatchService.load(shops, candidate(CONFIGS["text alone"], "two-shops"),
                                progress=False)
    app = create_app(lambda: service, None, tmp_path / "gray.jsonl")
    title = shops["title"].iloc[5]
    with TestClient(app) as client:
        assert wait_ready(client)["sources"] == ["A", "B"]
        missing = client.post("/match", data={"title": title})
        assert missing.status_code == 422
        assert "say which one the listing comes from (source)" in missing.json()["detail"]
        unknown = client.post("/match", data={"title": title, "source": "C"})
        assert unknown.status_code == 422 and "'C' is not one" in unknown.json()["detail"]
        body = client.post("/match", data={"title": title, "source": "A"}).json()
        assert {n["source"] for n in body["neighbours"]} == {"B"}
        assert len(body["neighbours"]) == CONFIGS["text alone"].k
        one_shop = client.post("/pair", data={"title_a": title, "title_b": title,
                                              "source_a": "A", "source_b": "A"})
        assert one_shop.status_code == 422 and "both come from source 'A'" in one_shop.text
        two = client.post("/pair", data={"title_a": title, "title_b": title,
                                         "source_a": "A", "source_b": "B"}).json()
        assert two["duplicate"]
        added = client.post("/catalog", data={"posting_id": "new", "title": "Kopi Luwak 9g",
                                              "source": "A"})
        assert added.status_code == 201, added.text
        from_b = client.post("/match", data={"title": "Kopi Luwak 9g", "source": "B"}).json()
        assert from_b["neighbours"][0]["posting_id"] == "new"
        from_a = client.post("/match", data={"title": "Kopi Luwak 9g", "source": "A"}).json()
        assert "new" not in {n["posting_id"] for n in from_a["neighbours"]}


def test_listings_without_a_photo_go_to_the_title_only_candidate(service, postings):
    """With a title-only service beside a photo candidate, photo-less requests are decided by
    it (and say so), and an added listing reaches both catalogs."""
    from shopee_match.apply.service import MatchService

    main = MatchService.load(postings, candidate(CONFIGS["static"], "photos"), progress=False)
    main.by_title = MatchService.load(postings, candidate(CONFIGS["text alone"], "titles"),
                                      progress=False)
    title, image = postings["title"].iloc[5], photo(postings, 5)
    with TestClient(create_app(lambda: main)) as c:
        assert wait_ready(c)["titles_candidate"] == "titles"
        by_title = c.post("/match", data={"title": title}).json()
        assert by_title["candidate"] == "titles" and by_title["missing"] == []
        assert by_title["warnings"][0].startswith("no photo: decided by the title-only")
        assert c.post("/match", data={"title": title},
                      files={"image": ("a.jpg", image)}).json()["candidate"] == "photos"
        assert c.post("/pair", data={"title_a": title, "title_b": title},
                      files={"image_a": ("a.jpg", image)}).json()["candidate"] == "titles"
        added = c.post("/catalog", data={"posting_id": "p-1", "title": "Kopi Kapal Api 165g"},
                       files={"image": ("a.jpg", image)})
        assert added.status_code == 201 and added.json()["candidate"] == "photos"
        photo_only = c.post("/catalog", data={"posting_id": "p-2"},
                            files={"image": ("a.jpg", image)})
        assert photo_only.status_code == 201
        assert len(main) == len(main.by_title) == len(postings) + 2
        found = c.post("/match", data={"title": "Kopi Kapal Api 165g"}).json()
        assert found["neighbours"][0]["posting_id"] == "p-1"


def test_metrics_count_requests_errors_and_the_catalog(client, service):
    client.post("/match", data={"title": "kopi"})
    client.post("/match", data={})
    text = client.get("/metrics").text
    assert 'shopee_match_requests_total{endpoint="/match",status="200"} 1.0' in text
    assert 'shopee_match_errors_total{endpoint="/match",status="422"} 1.0' in text
    assert f"shopee_match_catalog_listings {float(len(service))}" in text
    assert 'shopee_match_request_seconds_count{endpoint="/match"} 2.0' in text


def test_gray_requests_are_logged_one_json_line_each(service, postings, tmp_path):
    """Band [0.99, 1.01) on the fused similarity: a listing already in the catalog is gray
    (its copy scores 1), a title like nothing in it is not."""
    log = tmp_path / "gray.jsonl"
    image = photo(postings, 8)
    with TestClient(create_app(lambda: service, GrayBand(0.99, 1.01), log)) as c:
        wait_ready(c)
        for title, files in ((postings["title"].iloc[8], {"image": ("a.jpg", image)}),
                             ("zzqx vvw", None), (postings["title"].iloc[8], None)):
            body = c.post("/match", data={"title": title}, files=files).json()
            assert body["gray"] == any(n["gray"] for n in body["neighbours"])
        metrics = c.get("/metrics").text
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["title"] for r in lines] == [postings["title"].iloc[8]]
    assert lines[0]["image_sha256"] == hashlib.sha256(image).hexdigest()
    assert [n["posting_id"] for n in lines[0]["neighbours"]] == [postings["posting_id"].iloc[8]]
    assert "shopee_match_gray_requests_total 1.0" in metrics


def test_health_is_503_while_loading_and_after_a_failed_load(service):
    release = threading.Event()
    failures = []

    def slow():
        logging.getLogger("shopee_match.apply.service").info("embedding the catalog")
        release.wait(10)
        return service

    with TestClient(create_app(slow)) as c:
        loading = c.get("/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert "embedding" in c.post("/match", data={"title": "x"}).json()["detail"]
        release.set()
        assert wait_ready(c)["candidate"] == "tiny-dynamic"

    def broken():
        raise FileNotFoundError("no such catalog")

    with TestClient(create_app(broken, on_failure=failures.append)) as c:
        deadline = time.monotonic() + 10
        while c.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        failed = c.get("/health")
        assert failed.status_code == 503 and "no such catalog" in failed.json()["detail"]
    assert isinstance(failures[0], FileNotFoundError)


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/match", "/pair", "/catalog", "/health", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/match"]["post"]["requestBody"]["content"]


def test_serve_with_an_unknown_candidate_stops_with_a_clear_error(tiny_env, capsys):
    from shopee_match.cli import main

    assert main(["serve", "--dataset", "demo-tiny", "--candidate", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no candidate named 'nope'" in err and "Traceback" not in err
    from shopee_match.apply.candidates import save_candidate
    from shopee_match.data.datasets import train_fingerprint

    save_candidate("tiny", CONFIGS["static"], 0.9, 0.9, dataset="demo-tiny",
                   fingerprint=train_fingerprint("demo-tiny"), split_seed=0, notebook="test")
    assert main(["serve", "--dataset", "demo-tiny", "--titles-candidate", "nope2"]) == 2
    assert "no candidate named 'nope2'" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(server: subprocess.Popen, base: str, log, seconds: float = 240) -> None:
    """Until ``shopee-match serve`` answers /health with 200 (its log shown if it stops)."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready after {seconds} s:\n{log.read_text()[-3000:]}")


def test_a_real_server_answers_over_http(data_root, tmp_path):
    """``shopee-match serve`` as a subprocess on loopback, from a saved candidate."""
    import httpx

    from shopee_match.apply.candidates import save_candidate
    from shopee_match.data.datasets import train_fingerprint

    env = {**os.environ, "SHOPEE_MATCH_DATA": str(data_root),
           "SHOPEE_MATCH_ARTIFACTS": str(tmp_path / "artifacts")}
    config = CONFIGS["static"]
    fingerprint = train_fingerprint(str(data_root / "demo-tiny"))
    save_candidate("tiny-static", config, 0.9, 0.88, dataset="demo-tiny",
                   fingerprint=fingerprint, split_seed=0, notebook="test",
                   root=tmp_path / "artifacts" / "candidates")
    port, log = free_port(), tmp_path / "gray.jsonl"
    server = subprocess.Popen(
        [sys.executable, "-m", "shopee_match.cli", "serve", "--dataset", "demo-tiny",
         "--port", str(port), "--gray-band", "0.5,0.9", "--gray-log", str(log)],
        env=env, stdout=(tmp_path / "server.log").open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(server, base, tmp_path / "server.log")
        health = httpx.get(f"{base}/health").json()
        assert health["candidate"] == "tiny-static" and health["catalog_size"] == 160
        assert health["titles_candidate"] == "quick-fallback"  # no title-only one saved
        postings = pd.read_csv(data_root / "demo-tiny" / "train.csv")
        title, own = postings["title"][3], postings["posting_id"][3]
        image = (data_root / "demo-tiny" / "train_images" / postings["image"][3]).read_bytes()
        for kwargs in ({"data": {"title": title}}, {"files": {"image": ("a.jpg", image)}},
                       {"data": {"title": title}, "files": {"image": ("a.jpg", image)}}):
            response = httpx.post(f"{base}/match", **kwargs)
            assert response.status_code == 200, response.text
            assert own in [n["posting_id"] for n in response.json()["neighbours"]]
        both = response.json()
        assert both["neighbours"][0]["posting_id"] == own and own in both["matches"]
        bad = {"nothing": ({}, 422), "not an image": ({"files": {"image": ("x", b"text")}}, 415),
               "bomb": ({"files": {"image": ("x.png", png_header(20_000, 20_000))}}, 413),
               "11 MB": ({"files": {"image": ("x.jpg", b"\0" * (11 * 2**20))}}, 413)}
        for name, (kwargs, status) in bad.items():
            response = httpx.post(f"{base}/match", **kwargs, timeout=30)
            assert response.status_code == status, (name, response.text)
            assert response.json()["detail"]
        huge = httpx.post(f"{base}/match", data={"title": "kopi " * 20_000})
        assert huge.status_code == 200 and any("cut from" in w for w in huge.json()["warnings"])
        assert huge.json()["candidate"] == "quick-fallback"  # no photo: titles decide
        pair = httpx.post(f"{base}/pair", data={"title_a": title, "title_b": title},
                          files={"image_a": ("a.jpg", image), "image_b": ("b.jpg", image)})
        assert pair.json()["duplicate"] is True
        assert httpx.post(f"{base}/catalog", data={"posting_id": own, "title": "x"}
                          ).status_code == 409
        metrics = httpx.get(f"{base}/metrics").text
        assert 'shopee_match_errors_total{endpoint="/match",status="415"} 1.0' in metrics
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        output = (tmp_path / "server.log").read_text()
    assert server.returncode == 0, output
    assert "index: flat over 160 catalog listings" in output
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert logged and {r["endpoint"] for r in logged} <= {"/match", "/pair"}


def test_the_band_notebook_05_saved_applies_to_the_cross_encoder():
    from types import SimpleNamespace

    from shopee_match.serve import candidate_band

    band = candidate_band(SimpleNamespace(scorer=SimpleNamespace(gray_band=(0.2, 0.8))))
    assert (band.low, band.high, band.on) == (0.2, 0.8, "cross_encoder")
    assert candidate_band(SimpleNamespace(scorer=None)) is None  # a threshold candidate


def test_concurrent_adds_reach_both_catalogs_or_neither(data_root, tmp_path):
    """A real server whose title-only candidate reads TF-IDF alone (as 03 may save it): 8
    clients add 25 listings each and repeat some ids. Every new id is a 201 and found by
    /match at once, every repeat a 409, nothing a 5xx, and the catalog holds each id once."""
    import httpx

    from shopee_match.apply.candidates import save_candidate
    from shopee_match.data.datasets import train_fingerprint

    env = {**os.environ, "SHOPEE_MATCH_DATA": str(data_root),
           "SHOPEE_MATCH_ARTIFACTS": str(tmp_path / "artifacts")}
    fingerprint = train_fingerprint(str(data_root / "demo-tiny"))
    root = tmp_path / "artifacts" / "candidates"
    save_candidate("photos", CONFIGS["static"], 0.9, 0.88, dataset="demo-tiny",
                   fingerprint=fingerprint, split_seed=0, notebook="test", root=root)
    tfidf_only = CONFIGS["text alone"].replace(fusion_weights={"tfidf": 1.0}, value=0.5)
    save_candidate("tfidf-titles", tfidf_only, 0.8, 0.8, dataset="demo-tiny",
                   fingerprint=fingerprint, split_seed=0, notebook="test", root=root)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "shopee_match.cli", "serve", "--dataset", "demo-tiny",
         "--port", str(port), "--candidate", "photos", "--titles-candidate", "tfidf-titles",
         "--gray-log", str(tmp_path / "gray.jsonl")],
        env=env, stdout=(tmp_path / "server.log").open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def client(c: int) -> list[tuple[str, int]]:
        answers = []
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(25):
                ids = [f"new-{c}-{i}"] + ([f"new-{c}-{i - 1}"] if i % 8 == 1 else [])
                for posting_id in ids:  # a new id, and now and then the one before again
                    response = http.post("/catalog", data={
                        "posting_id": posting_id,
                        "title": f"Kopi Nusantara seri {c} nomor {posting_id.split('-')[2]}"})
                    answers.append((posting_id, response.status_code))
        return answers

    try:
        wait_for_server(server, base, tmp_path / "server.log")
        assert httpx.get(f"{base}/health").json()["titles_candidate"] == "tfidf-titles"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = [a for part in pool.map(client, range(8)) for a in part]
        first: dict[str, int] = {}
        for posting_id, status in answers:
            assert status in (201, 409), (posting_id, status)
            if posting_id in first:
                assert status == 409, posting_id  # a repeat of an id already added
            else:
                first[posting_id] = status
        assert set(first.values()) == {201} and len(first) == 200
        health = httpx.get(f"{base}/health").json()
        assert health["catalog_size"] == 160 + 200
        for c, i in ((0, 0), (3, 17), (7, 24)):
            found = httpx.post(f"{base}/match",
                               data={"title": f"Kopi Nusantara seri {c} nomor {i}"}).json()
            assert f"new-{c}-{i}" in [n["posting_id"] for n in found["neighbours"]]
        assert "shopee_match_errors_total{endpoint=\"/catalog\",status=\"500\"}" not in \
            httpx.get(f"{base}/metrics").text
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
