"""Reranking: pairs never straddle splits, augmentation keeps the product, clusters, gray zone,
and a cross-encoder trained, saved, reloaded and used as a second stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopee_match.match.selection import Galleries
from shopee_match.train.cross_encoder import (
    augment_title,
    gray_band,
    held_out_labels,
    read_labelled,
    split_pairs,
    training_pairs,
    write_gray_zone,
)


def test_augmentation_changes_the_text_but_keeps_the_words():
    rng = np.random.default_rng(0)
    title = "[PROMO] Kopi Kapal Api Special 25gr!"
    variants = [augment_title(title, rng) for _ in range(50)]
    assert all(v != title for v in variants)
    core = {"kopi", "kapal", "api", "special", "25gr"}
    assert all(core <= set(v.lower().replace("!", " ").split()) for v in variants)
    again = np.random.default_rng(0)
    assert [augment_title(title, again) for _ in range(50)] == variants  # seeded


def clustered(n_groups=30, per_group=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_groups), per_group)
    v = rng.normal(size=(n_groups, 8))[labels] + 0.6 * rng.normal(size=(len(labels), 8))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    titles = [f"product {g} variant {i}" for i, g in enumerate(labels)]
    return {"text": v}, labels, titles


def test_candidate_pairs_never_straddle_splits_and_are_labelled_by_group():
    vectors, labels, _ = clustered()
    galleries = Galleries(vectors, labels, split_seed=1)
    pairs = split_pairs(galleries, {"text": 1.0}, k=5)
    split_of = np.empty(len(labels), dtype=object)
    for name, rows in galleries.rows.items():
        split_of[rows] = name
    assert (split_of[pairs["a"]] == pairs["split"]).all()
    assert (split_of[pairs["b"]] == pairs["split"]).all()
    assert (pairs["a"] < pairs["b"]).all() and not pairs.duplicated(["a", "b"]).any()
    assert (pairs["label"] == (labels[pairs["a"]] == labels[pairs["b"]])).all()
    sims = (vectors["text"][pairs["a"]] * vectors["text"][pairs["b"]]).sum(1)
    assert np.allclose(pairs["sim"], sims, atol=1e-5)


def test_training_pairs_are_balanced_with_the_hardest_negatives():
    vectors, labels, titles = clustered(seed=2)
    pairs = split_pairs(Galleries(vectors, labels), {"text": 1.0}, k=8)
    table = training_pairs(pairs, titles, max_negatives=100, seed=0)
    counts = table["kind"].value_counts()
    assert counts["hard negative"] == 100
    assert (table["label"] == 1).sum() == (table["label"] == 0).sum()
    train_neg = pairs[(pairs["split"] == "train") & ~pairs["label"]]
    assert len(train_neg) > 100
    kept = set(table.loc[table["kind"] == "hard negative", "sentence1"] + "|" +
               table.loc[table["kind"] == "hard negative", "sentence2"])
    hardest = train_neg.nlargest(100, "sim")
    assert kept == {titles[a] + "|" + titles[b] for a, b in zip(hardest["a"], hardest["b"])}
    augmented = table[table["kind"] == "augmented positive"]
    assert len(augmented) == 100 - counts["positive"] and (augmented["label"] == 1).all()
    assert len(augmented) >= 25  # at least a quarter of the positives are augmented
    assert not set(augmented["sentence1"]) & set(titles)  # text changed
    extra = pd.DataFrame({"sentence1": ["x"], "sentence2": ["y"], "label": [0.0]})
    assert len(training_pairs(pairs, titles, 100, extra=extra)) == len(table) + 1
    few = training_pairs(pairs, titles, max_negatives=20, seed=0)  # more positives than that
    assert few["kind"].value_counts().to_dict() == {"hard negative": 20, "positive": 15,
                                                    "augmented positive": 5}


def test_gray_band_brackets_the_uncertain_scores():
    scores = np.array([0.05, 0.1, 0.3, 0.4, 0.45, 0.55, 0.6, 0.7, 0.9, 0.95])
    is_match = np.array([0, 0, 0, 1, 0, 1, 0, 1, 1, 1], dtype=bool)
    low, high = gray_band(scores, is_match, precision=0.95, recall=0.95)
    assert (low, high) == (0.4, 0.7)  # from 0.7 up all match; from 0.4 up every match kept


def test_gray_zone_round_trip_feeds_labelled_train_pairs_back(tmp_path, caplog):
    postings = pd.DataFrame({"posting_id": ["p0", "p1", "p2", "p3"],
                             "title": ["a one", "a 1", "b two", "c three"],
                             "image": ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]})
    path = write_gray_zone(tmp_path / "gray_zone.csv", postings, np.array([0, 0, 2]),
                           np.array([1, 2, 3]), np.array([0.52, 0.3, 0.49]))
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert table["score"].tolist() == ["0.49", "0.52", "0.3"]  # most uncertain first
    assert len(read_labelled(path)) == 0  # nothing labelled yet
    table["label"] = ["1", "0", ""]
    table.to_csv(path, index=False)
    labelled = read_labelled(path, exclude_ids=["p3"])  # p3 is a val/test posting
    assert labelled.to_dict("records") == [{"sentence1": "a one", "sentence2": "a 1",
                                            "label": 0.0}]  # (p2, p3) left out, p0-p2 unlabelled
    assert "1 labelled pair(s) name stack, val or test postings" in caplog.text
    assert held_out_labels(path, ["p3"])[["posting_id_1", "posting_id_2", "label"]].to_dict(
        "records") == [{"posting_id_1": "p2", "posting_id_2": "p3", "label": "1"}]
    assert read_labelled(tmp_path / "none.csv").empty


def test_a_new_gray_zone_keeps_every_label_and_offers_only_unlabelled_pairs(tmp_path):
    postings = pd.DataFrame({"posting_id": [f"p{i}" for i in range(5)],
                             "title": ["a", "b", "c", "d", "e"]})
    path = write_gray_zone(tmp_path / "gray_zone.csv", postings, np.array([0, 1, 2]),
                           np.array([1, 2, 3]), np.array([0.5, 0.45, 0.6]))
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[table["posting_id_1"] == "p0", "label"] = "1"  # (p0, p1) labelled
    table.to_csv(path, index=False)
    # the next run offers (p1, p0) again (the same pair, the other way round) and (p3, p4)
    write_gray_zone(path, postings, np.array([1, 3]), np.array([0, 4]), np.array([0.5, 0.55]))
    again = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert again[["posting_id_1", "posting_id_2", "label"]].values.tolist() == [
        ["p3", "p4", ""], ["p0", "p1", "1"]]  # new offers first; the label kept, not reoffered


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"posting_id_1,posting_id_2,title_1,title_2,image_1,image_2,score,label\n"
     b"p0,p1,a,b,,,0.5,1,extra\n", "line 2 has 9 fields"),
    (b"posting_id_1,posting_id_2,title_1\np0,p1,a\n", r"lacks column\(s\)"),
    (b"posting_id_1,posting_id_2,title_1,title_2,image_1,image_2,score,label\n"
     b"p0,p1,a,b,,,0.5,yes\n", "label must be 1"),
])
def test_a_hand_edited_gray_zone_gets_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "gray_zone.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        read_labelled(path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match=message):  # never overwritten either
        write_gray_zone(path, pd.DataFrame({"posting_id": ["x", "y"], "title": ["x", "y"]}),
                        np.array([0]), np.array([1]), np.array([0.5]))
    assert path.read_bytes() == content


def test_a_cp1252_gray_zone_is_read_with_a_warning(tmp_path):
    path = tmp_path / "gray_zone.csv"
    path.write_bytes("posting_id_1,posting_id_2,title_1,title_2,image_1,image_2,score,label\n"
                     "p0,p1,Caf\xe9 25gr,cafe 25 gr,,,0.5,1\n".encode("cp1252"))
    with pytest.warns(UserWarning, match="not UTF-8"):
        labelled = read_labelled(path)
    assert labelled["sentence1"].tolist() == ["Café 25gr"]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    """A cross-encoder fine-tuned for a few steps on toy pairs (the PyPI MiniLM as base)."""
    from shopee_match.train.cross_encoder import CrossEncoderConfig, train_cross_encoder

    rng = np.random.default_rng(0)
    brands = ["kopi kapal api", "indomie goreng", "rinso cair", "teh pucuk", "aqua botol"]
    rows = []
    for b in brands:
        for size in ("250ml", "1l", "25gr"):
            rows.append({"sentence1": f"{b} {size}", "sentence2": augment_title(f"{b} {size}",
                                                                               rng), "label": 1.0})
            other = brands[(brands.index(b) + 1) % len(brands)]
            rows.append({"sentence1": f"{b} {size}", "sentence2": f"{other} {size}",
                         "label": 0.0})
    pairs = pd.DataFrame(rows * 4)
    root = tmp_path_factory.mktemp("models")
    config = CrossEncoderConfig(epochs=2, batch_size=8, lr=1e-4, max_length=32)
    first = train_cross_encoder(pairs, config, root=root, progress=False)
    again = train_cross_encoder(pairs, config, root=root, progress=False)
    return first, again, pairs, config


def test_training_the_cross_encoder_again_from_scratch_gives_the_same_model(cross_encoder,
                                                                           tmp_path):
    """Notebook 05 is reproducible: the same pairs and settings, trained again in another
    folder (nothing loaded), score every pair as the first model does."""
    from shopee_match.train.cross_encoder import train_cross_encoder

    first, _, pairs, config = cross_encoder
    fresh = train_cross_encoder(pairs, config, root=tmp_path, progress=False)
    assert fresh.trained
    left, right = pairs["sentence1"].tolist(), pairs["sentence2"].tolist()
    np.testing.assert_allclose(fresh.load(engine="torch").score_titles(left, right),
                               first.load(engine="torch").score_titles(left, right), atol=1e-5)


def test_cross_encoder_trains_once_then_loads_and_separates_pairs(cross_encoder):
    first, again, _, _ = cross_encoder
    assert first.trained and not again.trained and again.folder == first.folder
    assert any("loss" in entry for entry in first.log)
    model = first.load()
    same = model.score_titles(["indomie goreng 1l"], ["INDOMIE GORENG 1L ORIGINAL"])
    other = model.score_titles(["indomie goreng 1l"], ["rinso cair 1l"])
    assert same[0] > other[0] and model.pairs_per_second > 0


def test_reranker_is_a_second_stage_and_scores_each_pair_once(cross_encoder, tmp_path):
    from shopee_match.apply.second_stages import Reranker
    from shopee_match.match.config import MatchConfig, SecondStage
    from shopee_match.match.decision import predict_matches
    from shopee_match.match.gallery import Gallery

    reranker = Reranker(cross_encoder[0].load())
    titles = ["kopi kapal api 25gr", "Kopi Kapal Api 25gr COD", "rinso cair 1l",
              "RINSO CAIR 1L", "teh pucuk 250ml"]
    v = np.eye(5, dtype=np.float32) + 0.5
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    config = MatchConfig(encoders={"text": "sbert:x"}, fusion_weights={"text": 1.0}, k=4,
                         value=None, second_stage=SecondStage("cross_encoder", 0.5, "rerank"))
    gallery = Gallery({"text": v}, titles=np.array(titles, dtype=object))
    matches = predict_matches(gallery, config, reranker)
    assert matches[0, 1] and matches[2, 3] and not matches[0, 2]
    assert len(gallery.cache[reranker.cross_encoder.cache_key]) == 10  # 5·4/2 unordered pairs
    with pytest.raises(ValueError, match="reads titles"):
        predict_matches(Gallery({"text": v}), config, reranker)
    saved = Reranker.load(reranker.save(tmp_path / "rerank"))
    ce = reranker.cross_encoder
    assert np.allclose(saved.cross_encoder.score_titles(titles[:1], titles[1:2]),
                       ce.score_titles(titles[:1], titles[1:2]), atol=1e-6)
    reranker.classifier = "fitted"
    alone = reranker.cross_encoder_only()  # the cross_encoder kind, the model not reloaded
    assert alone.cross_encoder is ce and alone.classifier is None
    assert reranker.classifier == "fitted"


def test_onnx_cross_encoder_scores_as_torch_does_and_saves_its_gray_band(cross_encoder,
                                                                         tmp_path):
    from shopee_match.apply.second_stages import Reranker

    torch_run = Reranker(cross_encoder[0].load(engine="torch"))
    onnx_run = Reranker(cross_encoder[0].load(engine="onnx"))
    assert (torch_run.cross_encoder.engine, onnx_run.cross_encoder.engine) == ("torch", "onnx")
    first = ["kopi kapal api 25gr", "rinso", "Indomie Goreng Rendang 1 dus isi 40 bungkus", ""]
    second = ["KOPI KAPAL API 25 gr", "teh pucuk harum 350ml botol", "indomie rendang", "x"]
    want = torch_run.cross_encoder.score_titles(first, second)
    np.testing.assert_allclose(onnx_run.cross_encoder.score_titles(first, second), want,
                               atol=1e-4)
    np.testing.assert_allclose(onnx_run.cross_encoder.score_titles(first[::-1], second[::-1]),
                               want[::-1], atol=1e-4)  # sorted by length, in input order
    onnx_run.gray_band = (0.2, 0.9)
    saved = Reranker.load(onnx_run.save(tmp_path / "rerank"))
    assert saved.gray_band == (0.2, 0.9) and Reranker.load(
        torch_run.save(tmp_path / "plain")).gray_band is None


def test_fp32_onnx_scores_each_pair_alone_side_by_side_as_batches_do(cross_encoder):
    """On onnxruntime a pair runs alone (a run per core at once): its score does not depend
    on the pairs beside it, and matches fp32 in batches (the torch-like path kept for a
    ``batch_size``) to float precision."""
    from shopee_match.embed.cross_encoder import CrossEncoderModel
    from shopee_match.embed.engines import cpu_cores

    folder = cross_encoder[0].folder / "model"
    alone = CrossEncoderModel(folder, engine="onnx")
    batched = CrossEncoderModel(folder, engine="onnx", batch_size=64)
    assert (alone.batch_size, batched.batch_size) == (1, 64)
    assert CrossEncoderModel(folder, engine="torch").batch_size == 64
    first = ["kopi kapal api 25gr", "rinso cair 1l", "teh pucuk 250ml", "indomie goreng", ""]
    second = ["KOPI KAPAL API 25 gr", "rinso cair 800ml", "aqua botol 600ml", "INDOMIE", "x"]
    scores = alone.score_titles(first, second)
    graph = alone._onnx()[0]
    assert graph.workers == cpu_cores() and batched._onnx()[0].workers == 1
    one_by_one = [alone.score_titles([x], [y])[0] for x, y in zip(first[::-1], second[::-1])]
    np.testing.assert_array_equal(one_by_one[::-1], scores)
    graph.workers = 3  # whatever pairs run beside it
    np.testing.assert_array_equal(alone.score_titles(first, second), scores)
    np.testing.assert_allclose(batched.score_titles(first, second), scores, atol=1e-5)


def test_token_attributions_cover_every_token(cross_encoder):
    from shopee_match.plots import attribution_html

    model = cross_encoder[0].load()
    tokens = model.token_attributions("kopi kapal api 25gr", "rinso cair 1l", steps=8)
    names = [t for t, _ in tokens]
    assert names[0] == "[CLS]" and "[SEP]" in names
    assert "rinso" in "".join(n.removeprefix("##") for n in names)
    assert max(abs(s) for _, s in tokens) == pytest.approx(1.0)
    page = attribution_html(tokens)
    words = len(tokens) - sum(t.startswith("##") for t in names)
    assert page.count("<span") == words and ">rinso<" in page


def test_an_int8_cross_encoder_scores_close_to_fp32_and_is_saved_as_int8(cross_encoder,
                                                                         tmp_path):
    from shopee_match.apply.second_stages import Reranker

    fp32, int8 = cross_encoder[0].load(engine="onnx"), cross_encoder[0].load(int8=True)
    assert int8.int8 and int8.engine == "onnx"
    first = ["kopi kapal api 25gr", "rinso cair 1l", "teh pucuk 250ml", "indomie goreng"]
    second = ["KOPI KAPAL API 25 gr", "rinso cair 800ml", "aqua botol 600ml", "INDOMIE GORENG"]
    a, b = fp32.score_titles(first, second), int8.score_titles(first, second)
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.1  # quantized, close
    alone = [int8.score_titles([x], [y])[0] for x, y in zip(first[::-1], second[::-1])]
    np.testing.assert_array_equal(alone[::-1], b)  # a pair scores the same in any batch
    int8._onnx()[0].workers = 3  # and whatever pairs run beside it
    np.testing.assert_array_equal(int8.score_titles(first, second), b)
    assert int8._onnx()[0].path.name.endswith("-int8.onnx")
    saved = Reranker.load(Reranker(int8).save(tmp_path / "rerank"))
    assert saved.cross_encoder.int8
    np.testing.assert_allclose(saved.cross_encoder.score_titles(first, second), b, atol=1e-6)
    assert not Reranker.load(Reranker(fp32).save(tmp_path / "plain")).cross_encoder.int8


def test_a_reranker_skips_the_pairs_it_rejects_whatever_the_cross_encoder_says(cross_encoder):
    """At one threshold (a submission), pairs whose classifier score stays below it with the
    cross-encoder's probability at 0 and at 1 are not cross-encoded: same decisions, less
    work. Tuning (exact scores) scores them all."""
    from shopee_match.apply.second_stages import Reranker
    from shopee_match.match.config import MatchConfig, SecondStage
    from shopee_match.match.decision import candidate_pair_features, predict_matches
    from shopee_match.match.gallery import Gallery
    from shopee_match.match.pairs import with_ce
    from shopee_match.match.second_stage import PairClassifier

    rng = np.random.default_rng(0)
    titles = np.array(["kopi kapal api 25gr", "Kopi Kapal Api 25gr COD", "rinso cair 1l",
                       "RINSO CAIR 1L", "teh pucuk 250ml", "teh pucuk 350ml", "aqua 600ml",
                       "AQUA botol 600 ml"], dtype=object)
    v = rng.normal(size=(8, 6)).astype(np.float32)
    v[1::2] = v[::2] + 0.3 * rng.normal(size=(4, 6))  # pairs of near-duplicates
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    config = MatchConfig(encoders={"text": "sbert:x"}, fusion_weights={"text": 1.0}, k=5,
                         value=None, second_stage=SecondStage("rerank", 0.5, "rerank"))
    pairs = candidate_pair_features(Gallery({"text": v}, titles=titles), config)
    near = (pairs.features["sim_text"] > pairs.features["sim_text"].median()).to_numpy()
    classifier = PairClassifier.fit(with_ce(pairs.features, rng.random(len(pairs))), near)
    model = cross_encoder[0].load()
    exact_gallery = Gallery({"text": v}, titles=titles)
    exact = predict_matches(exact_gallery, config, Reranker(model, classifier))
    reranker, fast_gallery = Reranker(model, classifier), Gallery({"text": v}, titles=titles,
                                                                   exact_scores=False)
    fast = predict_matches(fast_gallery, config, reranker)
    assert (fast != exact).nnz == 0 and reranker.skipped > 0
    key = model.cache_key
    unordered = {tuple(sorted(p)) for p in zip(pairs.i.tolist(), pairs.j.tolist())}
    assert len(fast_gallery.cache[key]) < len(exact_gallery.cache[key]) == len(unordered)


def test_random_negatives_are_mixed_in_from_train_listings_of_other_groups():
    vectors, labels, titles = clustered(seed=2)
    galleries = Galleries(vectors, labels)
    pairs = split_pairs(galleries, {"text": 1.0}, k=8)
    table = training_pairs(pairs, titles, max_negatives=60, seed=0, random_negatives=40,
                           labels=labels, train_rows=galleries.rows["train"])
    counts = table["kind"].value_counts()
    assert counts["hard negative"] == 60 and counts["random negative"] == 40
    assert (table["label"] == 1).sum() == (table["label"] == 0).sum() == 100
    group_of = dict(zip(titles, labels))
    train_titles = set(np.asarray(titles)[galleries.rows["train"]])
    randoms = table[table["kind"] == "random negative"]
    assert (randoms["label"] == 0).all()
    assert all(group_of[a] != group_of[b] for a, b in zip(randoms["sentence1"],
                                                           randoms["sentence2"]))
    assert set(randoms["sentence1"]) | set(randoms["sentence2"]) <= train_titles
    with pytest.raises(ValueError, match="labels and the train rows"):
        training_pairs(pairs, titles, 60, random_negatives=10)


def test_a_gray_zone_with_nothing_offered_reads_as_no_rows(tmp_path):
    postings = pd.DataFrame({"posting_id": ["p0", "p1"], "title": ["a", "b"]})
    path = write_gray_zone(tmp_path / "gray_zone.csv", postings, np.array([], dtype=int),
                           np.array([], dtype=int), np.array([]))
    assert len(path.read_text().strip().splitlines()) == 1  # the header only
    assert read_labelled(path).empty and held_out_labels(path, ["p0"]).empty
    again = write_gray_zone(path, postings, np.array([0]), np.array([1]), np.array([0.5]))
    assert pd.read_csv(again, dtype=str)["posting_id_1"].tolist() == ["p0"]
    header_only_short = tmp_path / "short.csv"
    header_only_short.write_text("posting_id_1,posting_id_2\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\)"):
        read_labelled(header_only_short)
