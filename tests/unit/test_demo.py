"""The demo dataset generator."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from shopee_match.data.demo import MAX_GROUP, generate_demo, group_sizes
from shopee_match.data.postings import load_postings


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(data_root, tmp_path):
    first = data_root / "demo-tiny"
    again = generate_demo(tmp_path / "again", size="tiny", progress=False)
    other = generate_demo(tmp_path / "other", size="tiny", seed=1, progress=False)
    assert digest(first) == digest(again)
    assert digest(first) != digest(other)


def test_existing_dataset_is_not_rewritten(tmp_path):
    folder = generate_demo(tmp_path / "d", size=30, progress=False)
    stamp = (folder / "train.csv").stat().st_mtime_ns
    generate_demo(folder, size=30, progress=False)
    assert (folder / "train.csv").stat().st_mtime_ns == stamp
    generate_demo(folder, size=40, progress=False)  # other size: rebuilt
    assert len(pd.read_csv(folder / "train.csv")) == 40


def test_group_sizes_sum_and_range():
    rng = np.random.default_rng(0)
    for n in (2, 3, 160, 5000):
        sizes = group_sizes(n, rng)
        assert sizes.sum() == n
        assert sizes.min() >= 2 and sizes.max() <= MAX_GROUP + 1
    with pytest.raises(ValueError):
        group_sizes(1, rng)


def test_group_size_distribution_is_shopee_like():
    sizes = group_sizes(34_250, np.random.default_rng(0))
    assert 2.6 < sizes.mean() < 3.6  # Shopee: 34,250 / 11,014 = 3.11
    assert (sizes == 2).mean() > 0.5 and sizes.max() >= 30


def test_tiny_dataset_is_valid_shopee_layout(data_root):
    df, report = load_postings(data_root / "demo-tiny" / "train.csv", check_images="decode",
                               progress=False)
    assert len(df) == 160 and report.ok
    assert df["posting_id"].str.match(r"train_\d+$").all()
    assert df["image_phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert (df["label_group"].value_counts() >= 2).all()
    # sellers reuse photos: some image files appear more than once
    assert df["image"].duplicated().any()
    # literal byte escapes as in Shopee's CSV get repaired
    assert df["title_raw"].str.contains(r"\\x[0-9a-f]{2}", regex=True).any()
    assert not df["title"].str.contains(r"\\x[0-9a-f]{2}", regex=True).any()


def test_hard_negatives_share_brand_and_line(tmp_path):
    folder = generate_demo(tmp_path / "d", size=600, progress=False)
    df = pd.read_csv(folder / "train.csv")
    # variants of one family: different groups whose titles share 3+ words
    words = df.groupby("label_group")["title"].first().str.lower().str.split().map(set)
    pairs = sum(len(a & b) >= 3 for i, a in enumerate(words) for b in list(words)[i + 1:])
    assert pairs >= 10


def test_every_group_is_a_distinct_product():
    from shopee_match.data.demo import _products

    products = _products(3000, np.random.default_rng(1))
    keys = {(p["category"].nouns[0], p["brand"], p["line"], tuple(p["attrs"].items()))
            for p in products}
    assert len(keys) == len(products) == 3000


def test_model_numbers_make_room_for_a_million_title_catalogue():
    """80,000 products: beyond the plain catalogue (it gives up after 1.6M draws, ~50 s)."""
    import re

    from shopee_match.data.demo import _products, generate_titles

    products = _products(80_000, np.random.default_rng(1), model_numbers=True)
    keys = {(p["category"].nouns[0], p["brand"], p["line"], tuple(p["attrs"].items()))
            for p in products}
    assert len(keys) == len(products) == 80_000
    assert all(re.search(r" [A-Z]\d{2,3}\b", p["line"]) for p in products)
    titles = generate_titles(2000, seed=3, model_numbers=True)
    assert len(titles) == 2000 and titles == generate_titles(2000, seed=3, model_numbers=True)


def test_test_layout_is_the_same_listings_without_labels(tmp_path):
    from shopee_match.data.splits import ground_truth

    train = generate_demo(tmp_path / "train", size=60, seed=4, progress=False)
    test = generate_demo(tmp_path / "test", size=60, seed=4, progress=False, layout="test")
    assert sorted(p.name for p in test.iterdir()) == ["demo.json", "solution.csv", "test.csv",
                                                       "test_images"]
    table = pd.read_csv(test / "test.csv")
    assert "label_group" not in table and len(table) == 60
    assert all((test / "test_images" / name).is_file() for name in table["image"])
    labelled, _ = load_postings(train / "train.csv", progress=False)
    truth = ground_truth(labelled)
    solution = pd.read_csv(test / "solution.csv").set_index("posting_id")["matches"]
    assert {p: set(m.split()) for p, m in solution.items()} == truth.to_dict()
    with pytest.raises(ValueError, match="layout"):
        generate_demo(tmp_path / "x", size=30, layout="kaggle")
