"""Linking two catalogs: links.csv, one-to-one, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopee_match.apply.link import best_mutual
from shopee_match.cli import main


@pytest.fixture(scope="module")
def shops(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A two-shop demo to choose the candidate on, and another one (other seed) split into its
    two shops' catalogs (A with photos, B without); returns (labelled folder, A.csv, B.csv)."""
    from shopee_match.data.demo import generate_demo

    root = tmp_path_factory.mktemp("shops")
    labelled = generate_demo(root / "labelled", size=300, seed=1, progress=False, shops=2)
    other = generate_demo(root / "other", size=160, seed=2, progress=False, shops=2)
    table = pd.read_csv(other / "train.csv", dtype=str)
    paths = []
    for name, shop in (("a", "marketplace"), ("b", "store")):
        part = table[table["source"] == shop].drop(columns=["source"])
        if name == "a":  # A with its photos, B titles only: photos are optional
            (root / "a_images").mkdir()
            for image in part["image"].unique():
                shutil.copyfile(other / "train_images" / image, root / "a_images" / image)
        else:
            part = part.drop(columns=["image", "image_phash"])
        part.to_csv(root / f"{name}.csv", index=False)
        paths.append(root / f"{name}.csv")
    return labelled, paths[0], paths[1]


def test_link_two_shops(shops, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path / "artifacts"))
    labelled, a_csv, b_csv = shops
    out = tmp_path / "links.csv"
    assert main(["link", str(a_csv), str(b_csv), "--trained-on", str(labelled),
                 "--out", str(out)]) == 0
    links = pd.read_csv(out, dtype={"id_a": str, "id_b": str})
    a, b = pd.read_csv(a_csv, dtype=str), pd.read_csv(b_csv, dtype=str)
    assert {"id_a", "id_b", "title_a", "title_b", "similarity", "score", "rank",
            "accepted"} <= set(links.columns)
    assert any(c.startswith("sim_") for c in links.columns)
    assert set(links["id_a"]) == set(a["posting_id"])  # every A listing has its candidates
    assert set(links["id_b"]) <= set(b["posting_id"])  # only B's listings on the other side
    assert not links.duplicated(["id_a", "id_b"]).any()
    group_a = a.set_index("posting_id")["label_group"]
    group_b = b.set_index("posting_id")["label_group"]
    same = group_a.loc[links["id_a"]].to_numpy() == group_b.loc[links["id_b"]].to_numpy()
    ok = links["accepted"].to_numpy()
    chance = same.mean()
    # the quick threshold candidate of a 300-listing set lets variants in (RTX 5080 ~ 5070),
    # so precision is modest; it must still be far above chance
    assert same[ok].mean() > 5 * chance, (same[ok].mean(), chance)
    true_pairs = sum((group_a == g).sum() * (group_b == g).sum() for g in group_a.unique())
    assert same[ok].sum() / true_pairs > 0.5  # more than half of the true links found
    printed = capsys.readouterr().out
    assert "listings found a match in B" in printed
    assert "B without photos: linking with a candidate that reads titles only" in printed

    one = tmp_path / "one.csv"
    assert main(["link", str(a_csv), str(b_csv), "--trained-on", str(labelled), "--out",
                 str(one), "--one-to-one"]) == 0
    best = pd.read_csv(one, dtype={"id_a": str, "id_b": str})
    kept = best[best["accepted"]]
    assert kept["id_a"].is_unique and kept["id_b"].is_unique
    assert set(zip(kept["id_a"], kept["id_b"])) <= set(zip(links["id_a"][ok],
                                                            links["id_b"][ok]))

    # --high-precision: one-to-one, cut at the candidate's saved threshold
    assert main(["link", str(a_csv), str(b_csv), "--trained-on", str(labelled),
                 "--high-precision"]) == 2  # the quick fallback has no high-precision point
    assert "has no high-precision point" in capsys.readouterr().err
    from shopee_match.apply.candidates import save_candidate
    from shopee_match.apply.choosing import choose_candidate
    from shopee_match.apply.link import side_by_side
    from shopee_match.data.datasets import train_fingerprint
    from shopee_match.data.postings import load_postings

    quick = choose_candidate(side_by_side(load_postings(a_csv)[0], load_postings(b_csv)[0]),
                             str(labelled), titles_only=True)
    sims = np.unique(kept["similarity"])  # cut between two of the one-to-one links' values
    cut = float(sims[len(sims) // 2 - 1] + sims[len(sims) // 2]) / 2
    save_candidate("hp", quick.config, quick.val_f1, quick.test_f1, dataset=str(labelled),
                   fingerprint=train_fingerprint(str(labelled)), split_seed=0, notebook="test",
                   high_precision={"threshold": cut, "val precision": 0.95})
    sure = tmp_path / "sure.csv"
    assert main(["link", str(a_csv), str(b_csv), "--trained-on", str(labelled), "--candidate",
                 "hp", "--high-precision", "--out", str(sure)]) == 0
    assert f"score >= {cut:.4f}" in capsys.readouterr().out
    cut_links = pd.read_csv(sure, dtype={"id_a": str, "id_b": str})
    taken = cut_links[cut_links["accepted"]]
    expected = kept[kept["similarity"] > cut]
    assert 0 < len(taken) < len(kept)
    assert set(zip(taken["id_a"], taken["id_b"])) == set(zip(expected["id_a"], expected["id_b"]))


def test_best_mutual_by_hand():
    links = pd.DataFrame({"id_a": ["1", "1", "2", "3"], "id_b": ["x", "y", "x", "z"],
                          "score": [0.9, 0.8, 0.95, 0.4], "similarity": [0.5] * 4,
                          "accepted": [True, True, True, False]})
    # 1's best is x, but x's best is 2: 1-x is not mutual; 1-y is not 1's best; 3-z rejected
    assert best_mutual(links).tolist() == [False, False, True, False]
    no_scores = links.assign(score=np.nan, similarity=[0.9, 0.8, 0.7, 0.99])
    assert best_mutual(no_scores).tolist() == [True, False, False, False]


def test_link_refuses_a_catalog_without_listings(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("posting_id,title\n")
    assert main(["link", str(empty), str(empty), "--trained-on", "demo-tiny"]) == 2
    assert "no postings" in capsys.readouterr().err
