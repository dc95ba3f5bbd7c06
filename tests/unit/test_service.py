"""The matching service's engine: a listing decided as the kit decides a gallery row, by the
same decision function, for every feature of a matcher configuration."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from shopee_match.apply.candidates import Candidate
from shopee_match.apply.listing import Listing, ListingError, check_title, read_image
from shopee_match.apply.service import GrayBand, MatchService, RowStore
from shopee_match.match.config import MatchConfig, SecondStage

IMAGE_SIZE = 64
SPECS = {"image": "timm:tf_efficientnet_lite0:pypi", "text": "sbert:pypi-minilm",
         "tfidf": "tfidf"}


def candidate(config: MatchConfig, name: str = "test", link: str = "auto") -> Candidate:
    return Candidate(name, config, 0.9, 0.9, "demo-tiny", "fp", 0, "test", "now", link=link)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiny(data_root):
    """demo-tiny's postings and its embeddings (offline models, cached for the session)."""
    from shopee_match.data.datasets import load_dataset
    from shopee_match.embed.embeddings import embed_dataset

    postings, _ = load_dataset(str(data_root / "demo-tiny"), "train")
    embeddings = embed_dataset(postings, "offline", image_size=IMAGE_SIZE, progress=False)
    vectors = {m: e.vectors for m, e in embeddings.items()}
    return postings, vectors


@pytest.fixture(scope="module")
def two_shops(tiny):
    """demo-tiny as two shops: each product group's listings alternate between shop A and B,
    so most products have listings in both."""
    postings, vectors = tiny
    shop = np.where(postings.groupby("label_group").cumcount() % 2 == 0, "A", "B")
    return postings.assign(source=shop), vectors


def gallery_of(postings: pd.DataFrame, vectors: dict, link: str = "auto"):
    from shopee_match.apply.pipeline import gallery_of

    return gallery_of(postings, vectors, link=link)


def leave_out(postings: pd.DataFrame, vectors: dict, row: int):
    """The catalog without ``row`` and that row as a listing (its gallery vectors, and its
    source where the postings have one)."""
    keep = np.delete(np.arange(len(postings)), row)
    catalog = postings.iloc[keep].reset_index(drop=True)
    rest = {m: v[keep] for m, v in vectors.items()}
    source = postings["source"].iloc[row] if "source" in postings else None
    listing = Listing(postings["title"].iloc[row], {m: v[row:row + 1] for m, v in vectors.items()},
                      [], postings["image_phash"].iloc[row], source=source)
    return catalog, rest, listing


BASE = MatchConfig(SPECS, {"image": 0.5, "text": 0.5}, k=8, image_size=IMAGE_SIZE, value=0.75)
CONFIGS = {
    "static": BASE,
    "dynamic+min2+union": BASE.replace(strategy="dynamic", value=1.0, min2=0.6,
                                       union={"tfidf": 0.6}),
    "text alone": MatchConfig(SPECS, {"text": 1.0}, k=5, image_size=IMAGE_SIZE, value=0.8),
}
#: every feature of a MatchConfig, one configuration each (second stages: see ``scorers``)
FEATURES = {
    "static": BASE,
    "dynamic": BASE.replace(strategy="dynamic", value=1.0),
    "quantile": BASE.replace(strategy="quantile", value=0.8),
    "min-2": BASE.replace(value=0.9, min2=0.6),
    "union": BASE.replace(value=0.85, union={"tfidf": 0.6, "text": 0.8}),
    "text alone": CONFIGS["text alone"],
    "blending": BASE.replace(blend_rounds=2, blend_top_n=3),
    "components": BASE.replace(value=0.7, components=True, max_component=6),
    "pair classifier": BASE.replace(second_stage=SecondStage("pair_classifier", 0.5, "m")),
    "cross-encoder alone": BASE.replace(value=None, k=5,
                                        second_stage=SecondStage("cross_encoder", 0.5, "ce")),
    "rerank": BASE.replace(value=None, k=5, union={"tfidf": 0.7},
                           second_stage=SecondStage("rerank", 0.5, "ce")),
    "rerank + blending + components": BASE.replace(
        value=None, k=5, blend_rounds=1, components=True, max_component=4,
        second_stage=SecondStage("rerank", 0.5, "ce")),
}
#: features a new listing is decided by exactly as its row of the gallery "catalog + itself"
#: (blending moves only the new listing, and components join the catalog's clusters)
NEW_LISTING_EXACT = ["static", "dynamic", "quantile", "min-2", "union", "text alone",
                     "pair classifier", "cross-encoder alone", "rerank"]
#: features checked again on a catalog of two shops linked across each other
ACROSS = ["static", "union", "blending", "components", "pair classifier",
          "rerank + blending + components"]
ACROSS_NEW = ["static", "min-2", "union", "pair classifier", "rerank"]


@pytest.fixture(scope="module")
def scorers(tiny, tmp_path_factory):
    """The second stages, fitted on demo-tiny's candidate pairs: a pair classifier, and a
    cross-encoder (the PyPI MiniLM with a fresh, seeded one-logit head: untrained, so its
    scores are arbitrary but fixed) alone and with a classifier over the pair features plus
    its probability. Each stage's threshold lies in a wide gap between its scores, so
    rounding cannot move a pair across it."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from shopee_match.apply.second_stages import Reranker
    from shopee_match.embed.cross_encoder import CrossEncoderModel
    from shopee_match.embed.specs import sbert_path
    from shopee_match.match.decision import candidate_pair_features
    from shopee_match.match.pairs import with_ce
    from shopee_match.match.second_stage import PairClassifier

    postings, vectors = tiny
    labels = postings["label_group"].to_numpy()
    gallery = gallery_of(postings, vectors)
    pairs = candidate_pair_features(gallery, FEATURES["pair classifier"])
    classifier = PairClassifier.fit(pairs.features, labels[pairs.i] == labels[pairs.j])
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ce") / "model"
    CrossEncoder(sbert_path("pypi-minilm"), num_labels=1, max_length=32).save(str(folder))
    ce = CrossEncoderModel(folder, device="cpu", engine="torch")
    ce_pairs = candidate_pair_features(gallery, FEATURES["rerank"])
    ce_scores = ce.pair_scores(gallery.titles, ce_pairs.i, ce_pairs.j)
    combined = PairClassifier.fit(with_ce(ce_pairs.features, ce_scores),
                                  labels[ce_pairs.i] == labels[ce_pairs.j])
    out = {"pair_classifier": classifier, "cross_encoder": Reranker(ce),
           "rerank": Reranker(ce, combined)}
    thresholds = {"pair_classifier": classifier.probabilities(pairs.features),
                  "cross_encoder": ce_scores,
                  "rerank": combined.probabilities(with_ce(ce_pairs.features, ce_scores))}
    return out, {kind: middle_gap(scores) for kind, scores in thresholds.items()}


def middle_gap(scores: np.ndarray) -> float:
    """The middle of the widest gap between sorted scores in their middle half."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    lo, hi = len(s) // 4, 3 * len(s) // 4
    at = lo + int(np.argmax(np.diff(s[lo:hi + 1])))
    return float((s[at] + s[at + 1]) / 2)


def configured(name: str, scorers) -> tuple[MatchConfig, object]:
    """A feature's configuration (its second stage's threshold set) and its scorer."""
    config = FEATURES[name]
    stage = config.second_stage
    if stage is None:
        return config, None
    models, thresholds = scorers
    return (config.replace(second_stage=SecondStage(stage.kind, thresholds[stage.kind],
                                                    stage.file)), models[stage.kind])


@pytest.mark.parametrize("name", list(FEATURES))
def test_a_catalog_listing_is_decided_as_its_row_in_the_gallery(tiny, scorers, name):
    """Every feature: the service decides a listing of its catalog exactly as
    predict_matches decides its row (one decision function, two ways to get there)."""
    from shopee_match.match.decision import predict_matches

    postings, vectors = tiny
    config, scorer = configured(name, scorers)
    full = predict_matches(gallery_of(postings, vectors), config, scorer)
    service = MatchService(postings, candidate(config), vectors, None, scorer)
    ids = postings["posting_id"].to_numpy()
    decided = accepted = 0
    for row in range(0, len(postings), 3):
        got = {service.ids[r] for r in service.match_known(ids[row]).matches}
        want = set(ids[full[row].indices]) - {ids[row]}
        assert got == want, f"row {row}"
        decided, accepted = decided + 1, accepted + len(want)
    assert 0 < accepted < decided * config.k  # neighbours accepted, and neighbours refused


@pytest.mark.parametrize("name", ACROSS)
def test_a_catalog_of_two_shops_is_decided_across_them_as_the_gallery_is(two_shops, scorers,
                                                                        name):
    """Linked across two shops, the service searches each listing among the other shop's
    only, and decides a catalog listing exactly as predict_matches over the catalog linked
    the same way (as submit and link do)."""
    from shopee_match.match.decision import predict_matches

    postings, vectors = two_shops
    config, scorer = configured(name, scorers)
    full = predict_matches(gallery_of(postings, vectors, link="across"), config, scorer)
    service = MatchService(postings, candidate(config, link="across"), vectors, None, scorer)
    assert service.sources == ["A", "B"]
    ids, shop = postings["posting_id"].to_numpy(), postings["source"].to_numpy()
    accepted = 0
    for row in range(0, len(postings), 3):
        decision = service.match_known(ids[row])
        found = decision.rows[decision.rows >= 0]
        assert len(found) == config.k and (shop[found] != shop[row]).all(), f"row {row}"
        got = {service.ids[r] for r in decision.matches}
        want = set(ids[full[row].indices]) - {ids[row]}
        assert got == want, f"row {row}"
        accepted += len(want)
    assert accepted > 0


@pytest.mark.parametrize("name", ACROSS_NEW)
def test_a_new_listing_of_one_shop_is_decided_among_the_others_as_in_the_gallery(
        two_shops, scorers, name):
    """A left-out listing sent with its shop gets the match set of its row in predict_matches
    over the catalog plus itself, linked across shops, with neighbours of the other shop."""
    from shopee_match.match.decision import predict_matches

    postings, vectors = two_shops
    config, scorer = configured(name, scorers)
    step = 9 if config.second_stage is None or config.second_stage.kind == "pair_classifier" \
        else 40
    checked = 0
    for row in range(0, len(postings), step):
        catalog, rest, listing = leave_out(postings, vectors, row)
        last = {m: sparse.vstack([v, listing.vectors[m]]).tocsr() if sparse.issparse(v)
                else np.vstack([v, listing.vectors[m]]) for m, v in rest.items()}
        gallery = gallery_of(pd.concat([catalog, postings.iloc[[row]]], ignore_index=True), last,
                             link="across")
        full = predict_matches(gallery, config, scorer)
        service = MatchService(catalog, candidate(config, link="across"), rest, None, scorer)
        decision = service.match(listing)
        found = decision.rows[decision.rows >= 0]
        assert (catalog["source"].to_numpy()[found] != listing.source).all(), f"row {row}"
        got = {service.ids[r] for r in decision.matches}
        want = {service.ids[r] for r in full[len(catalog)].indices if r < len(catalog)}
        assert got == want, f"row {row}"
        checked += len(want)
    assert checked > 0


def test_a_catalog_of_two_shops_needs_each_listings_shop(two_shops):
    """Linked across shops, a listing without its shop, from an unknown one, or a pair from
    one shop gets a clear error; added, a listing is found from the other shop only."""
    postings, vectors = two_shops
    catalog, rest, listing = leave_out(postings, vectors, 4)
    config = CONFIGS["static"].replace(union={"tfidf": 0.6})  # a dense and a sparse space
    service = MatchService(catalog, candidate(config), rest, None)  # auto: two shops, across
    with pytest.raises(ListingError, match=r"say which one .*\(source\)"):
        service.match(Listing(listing.title, listing.vectors, []))
    with pytest.raises(ListingError, match="'C' is not one of the catalog's sources"):
        service.match(Listing(listing.title, listing.vectors, [], source="C"))
    with pytest.raises(ListingError, match="both come from source 'A'"):
        service.pair(listing, listing)
    other = Listing(listing.title, listing.vectors, [], source="B" if listing.source == "A"
                    else "A")
    assert service.pair(listing, other).duplicate  # the same vectors, from two shops
    service.add("new", listing)
    assert "new" not in {service.ids[r] for r in service.match(listing).rows if r >= 0}
    assert service.ids[service.match(other).rows[0]] == "new"
    assert service.source_of(len(service) - 1) == listing.source
    linked_all = MatchService(catalog, candidate(config, link="all"), rest, None)
    assert linked_all.sources is None  # every pair counts: the shop is not needed
    assert linked_all.ids[linked_all.match(Listing(listing.title, listing.vectors, []))
                          .rows[0]] in set(catalog["posting_id"])


@pytest.mark.parametrize("name", NEW_LISTING_EXACT)
def test_a_new_listing_is_decided_as_its_row_in_the_gallery(tiny, scorers, name):
    """Left out of the catalog and sent as a new listing, a listing gets exactly the match set
    of its row in predict_matches over the catalog plus itself (appended last, as the service
    reads it): the same neighbours, strategy, min-2, union and second stage."""
    from shopee_match.match.decision import predict_matches

    postings, vectors = tiny
    config, scorer = configured(name, scorers)
    step = 9 if config.second_stage is None or config.second_stage.kind == "pair_classifier" \
        else 40  # a cross-encoder scores a whole gallery per listing: fewer listings
    checked = 0
    for row in range(0, len(postings), step):
        catalog, rest, listing = leave_out(postings, vectors, row)
        last = {m: sparse.vstack([v, listing.vectors[m]]).tocsr() if sparse.issparse(v)
                else np.vstack([v, listing.vectors[m]]) for m, v in rest.items()}
        gallery = gallery_of(pd.concat([catalog, postings.iloc[[row]]], ignore_index=True), last)
        full = predict_matches(gallery, config, scorer)
        service = MatchService(catalog, candidate(config), rest, None, scorer)
        got = {service.ids[r] for r in service.match(listing).matches}
        want = {service.ids[r] for r in full[len(catalog)].indices if r < len(catalog)}
        assert got == want, f"row {row}"
        checked += len(want)
    assert checked > 0  # some listings did match something


def test_the_cross_encoder_is_skipped_where_it_cannot_change_a_decision(tiny, scorers):
    """As submit does, the service does not cross-encode a pair that the reranker's
    classifier rejects whatever the cross-encoder says: the same decisions as cross-encoding
    every neighbour (exact_scores), the same scores where it ran, a bound below the threshold
    and no probability where it did not."""
    from shopee_match.apply.second_stages import Reranker
    from shopee_match.match.decision import candidate_pair_features
    from shopee_match.match.pairs import with_ce
    from shopee_match.match.second_stage import PairClassifier

    postings, vectors = tiny
    config = FEATURES["rerank"].replace(second_stage=SecondStage("rerank", 0.5, "ce"))
    # the fixture's untrained cross-encoder scores every pair ~0.51, so a classifier fitted on
    # it leans on it without bound; fitted on noise in [0, 1] it weighs it as a real one
    pairs = candidate_pair_features(gallery_of(postings, vectors), config)
    labels = postings["label_group"].to_numpy()
    noise = np.random.default_rng(0).random(len(pairs)).astype(np.float32)
    classifier = PairClassifier.fit(with_ce(pairs.features, noise),
                                    labels[pairs.i] == labels[pairs.j])
    reranker = Reranker(scorers[0]["rerank"].cross_encoder, classifier)
    skipping = MatchService(postings, candidate(config), vectors, None, reranker)
    exact = MatchService(postings, candidate(config), vectors, None, reranker,
                         exact_scores=True)
    ids = postings["posting_id"].to_numpy()
    skipped = accepted = 0
    for row in range(0, len(postings), 11):
        fast, full = skipping.match_known(ids[row]), exact.match_known(ids[row])
        assert fast.matches.tolist() == full.matches.tolist(), f"row {row}"
        ran = ~np.isnan(fast.cross_encoder)
        np.testing.assert_allclose(fast.cross_encoder[ran], full.cross_encoder[ran], atol=1e-6)
        np.testing.assert_allclose(fast.score[ran], full.score[ran], atol=1e-6)
        real = fast.rows >= 0
        assert (fast.score[~ran & real] < 0.5).all() and (full.score[~ran & real] < 0.5).all()
        assert not np.isnan(full.cross_encoder[real]).any()
        skipped, accepted = skipped + int((~ran & real).sum()), accepted + len(fast.matches)
    assert skipped > 0 and accepted > 0 and reranker.skipped == skipped


def test_a_new_listing_joins_clusters_within_their_cap():
    """With connected components a new listing matches what it accepts plus the clusters it
    joins, nearest first, while the joined cluster stays within max_component (and adding it
    joins the same clusters)."""
    angles = np.radians([0, 30, 60, 150, 175])  # a~b~c chained; d~e a cluster of two
    rows = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    catalog = pd.DataFrame({"posting_id": list("abcde"), "title": list("abcde")})
    config = MatchConfig({"text": "sbert:pypi-minilm"}, {"text": 1.0}, k=4, value=0.8,
                         components=True, max_component=3)
    service = MatchService(catalog, candidate(config), {"text": rows}, None)
    assert service.components.tolist() == [0, 0, 0, 1, 1]
    between = np.radians(162)  # accepts d and e (cos 12 and 13 degrees): joins their cluster
    query = Listing("q", {"text": np.array([[np.cos(between), np.sin(between)]], np.float32)},
                    [])
    assert [service.ids[r] for r in service.match(query).matches] == ["d", "e"]
    near_a = Listing("q", {"text": np.array([[1.0, 0.0]], np.float32)}, [])
    decision = service.match(near_a)  # accepts a and b, whose cluster of 3 it cannot join
    assert [service.ids[r] for r in decision.matches] == ["a", "b"]
    service.add("f", near_a)
    assert service.components[-1] not in service.components[:5]  # a cluster of its own


def test_query_embeddings_equal_the_catalogs(tiny):
    """A listing sent as title + photo bytes is embedded as the catalog was (same models,
    draft decoding, TF-IDF space)."""
    postings, vectors = tiny
    config = CONFIGS["dynamic+min2+union"]
    service = MatchService.load(postings, candidate(config), progress=False)
    for row in (0, 7, 31):
        path = postings["image_path"].iloc[row]
        listing = service.listing(postings["title"].iloc[row], open(path, "rb").read())
        assert listing.missing == []
        for m in ("image", "text"):
            np.testing.assert_allclose(listing.vectors[m][0], vectors[m][row], atol=1e-4)
        assert abs(listing.vectors["tfidf"] - vectors["tfidf"][row]).max() < 1e-6
        decision = service.match(listing)
        assert service.ids[decision.rows[0]] == postings["posting_id"].iloc[row]
        assert decision.similarity[0] == pytest.approx(1.0, abs=1e-4)


def test_an_int8_candidate_embeds_queries_with_int8_title_models(tiny):
    """A candidate tuned on int8 titles is served with them: a catalog title sent as a query
    comes back as its catalog row, which is the int8 vector, not the fp32 one."""
    from shopee_match.embed.embeddings import embed_dataset

    postings, vectors = tiny
    config = MatchConfig({"text": SPECS["text"]}, {"text": 1.0}, k=5, value=0.8, int8=True)
    service = MatchService.load(postings, candidate(config, "int8"), progress=False)
    int8 = embed_dataset(postings, {"text": SPECS["text"]}, modalities=["text"], int8=True,
                         progress=False)["text"].vectors
    np.testing.assert_array_equal(service.vectors["text"].rows, int8)
    listing = service.listing(postings["title"].iloc[5])
    np.testing.assert_allclose(listing.vectors["text"][0], int8[5], atol=1e-6)
    assert np.abs(listing.vectors["text"][0] - vectors["text"][5]).max() > 1e-4  # not fp32


def test_a_title_only_listing_says_what_it_lacks(tiny):
    postings, vectors = tiny
    service = MatchService.load(postings, candidate(CONFIGS["static"]), progress=False)
    listing = service.listing(postings["title"].iloc[3])
    assert listing.missing == ["image"]
    assert not listing.vectors["image"].any()
    assert any("no input for image" in w for w in listing.warnings)
    decision = service.match(listing)
    assert "image" not in decision.similarities
    np.testing.assert_allclose(decision.similarities["text"][0],
                               vectors["text"][decision.rows[0]] @ listing.vectors["text"][0],
                               atol=1e-6)


def test_bad_photos_and_titles_get_clear_errors():
    from PIL import Image

    with pytest.raises(ListingError, match="empty") as err:
        read_image(b"")
    assert err.value.status == 422
    with pytest.raises(ListingError, match="not an image") as err:
        read_image(b"hello, not a photo")
    assert err.value.status == 415
    with pytest.raises(ListingError, match="too large") as err:
        read_image(png_header(20_000, 20_000))  # 400 Mpx: PIL's bomb check
    assert err.value.status == 413
    with pytest.raises(ListingError, match="8000 x 6000") as err:
        read_image(png_header(8000, 6000))  # 48 Mpx: above our 40 Mpx limit
    assert err.value.status == 413
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, "PNG")
    photo = read_image(buffer.getvalue())
    assert (photo.width, photo.height) == (40, 30)
    title, warnings = check_title("Kopi " * 20_000)
    assert len(title) == 1000 and "cut from 99999 to 1000" in warnings[0]
    assert check_title("  Kopi \\xf0\\x9f\\x94\\xa5  ") == ("Kopi 🔥", [])


def test_a_truncated_or_empty_listing_is_refused(tiny):
    from PIL import Image

    postings, _ = tiny
    service = MatchService.load(postings, candidate(CONFIGS["static"]), progress=False)
    with pytest.raises(ListingError, match="title or an image"):
        service.listing("   ", None)
    buffer = io.BytesIO()
    Image.effect_noise((200, 200), 60).convert("RGB").save(buffer, "JPEG")
    with pytest.raises(ListingError, match="could not be decoded") as err:
        service.listing("kopi", buffer.getvalue()[:len(buffer.getvalue()) // 2])
    assert err.value.status == 422


@pytest.mark.parametrize("flat_max_rows", [100_000, 50], ids=["flat", "hnsw"])
def test_added_listings_are_found_and_ids_stay_unique(tiny, flat_max_rows):
    postings, vectors = tiny
    catalog, rest, listing = leave_out(postings, vectors, 12)
    config = CONFIGS["static"].replace(union={"tfidf": 0.6})  # a dense and a sparse space
    service = MatchService(catalog, candidate(config), rest, None,
                           flat_max_rows=flat_max_rows)
    assert service.rounds[-1].kind == ("flat" if flat_max_rows > len(catalog) else "hnsw")
    before = len(service)
    first = service.add("new-1", listing)
    assert len(service) == before + 1
    again = service.match(listing)
    assert service.ids[again.rows[0]] == "new-1"
    assert again.similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert set(first.matches) < set(again.matches)  # what it matched, plus itself
    with pytest.raises(ListingError, match="already in the catalog") as err:
        service.add("new-1", listing)
    assert err.value.status == 409
    for i in range(40):  # grows past the first allocation
        service.add(f"more-{i}", listing)
    assert service.vectors["image"].rows.shape[0] == len(service) == before + 41
    assert service.vectors["tfidf"].shape[0] == len(service)


def test_a_pair_is_a_duplicate_when_each_accepts_the_other(tiny):
    postings, vectors = tiny
    catalog, rest, a = leave_out(postings, vectors, 20)
    labels = postings["label_group"].to_numpy()
    other = next(r for r in range(len(postings)) if r != 20 and labels[r] != labels[20])
    service = MatchService(catalog, candidate(CONFIGS["static"]), rest, None)
    same = service.pair(a, a)
    assert same.duplicate and same.a_accepts_b and same.b_accepts_a
    assert same.similarity == pytest.approx(1.0, abs=1e-5)
    assert same.a.rows[0] == same.a.catalog_size == len(service)
    b = Listing("x", {m: v[other:other + 1] for m, v in vectors.items()}, [])
    different = service.pair(a, b)
    fused = different.similarity
    assert (not different.duplicate) == (fused < CONFIGS["static"].value)
    assert different.similarities["text"] == pytest.approx(
        float(vectors["text"][20] @ vectors["text"][other]), abs=1e-6)


def test_components_join_what_a_chain_connects():
    """Catalog a~b~c chained (a and c far apart): a query like a matches all three."""
    angles = np.radians([0, 30, 60, 150])  # a, b, c and an unrelated d
    rows = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    catalog = pd.DataFrame({"posting_id": list("abcd"), "title": list("abcd")})
    config = MatchConfig({"text": "sbert:pypi-minilm"}, {"text": 1.0}, k=3, value=0.8,
                         components=True)
    plain = config.replace(components=False)
    query = Listing("q", {"text": np.array([[np.cos(-0.3), np.sin(-0.3)]], np.float32)}, [])
    chained = MatchService(catalog, candidate(config), {"text": rows}, None)
    alone = MatchService(catalog, candidate(plain), {"text": rows}, None)
    assert [chained.ids[r] for r in chained.match(query).matches] == ["a", "b", "c"]
    assert [alone.ids[r] for r in alone.match(query).matches] == ["a"]
    chained.add("e", Listing("e", {"text": rows[3:4] * 1.0}, []))  # joins d's component
    assert chained.components[-1] == chained.components[3] != chained.components[0]


def test_gray_band_marks_scores_inside_it():
    from shopee_match.apply.service import Decision

    decision = Decision(np.array([4, 9, -1]), np.array([0.9, 0.5, -np.inf]), {},
                        np.array([0.7, 0.2, np.nan]), np.array([0.55, np.nan, np.nan]),
                        np.array([4]), 10)
    assert GrayBand(0.1, 0.7).mask(decision).tolist() == [False, True, False]
    assert GrayBand(0.5, 0.6, on="cross_encoder").mask(decision).tolist() == [True, False,
                                                                              False]
    decision.score = None  # a threshold candidate: the band is on the similarity
    assert GrayBand(0.4, 0.95).mask(decision).tolist() == [True, True, False]


def test_row_store_grows_without_losing_rows():
    store = RowStore(np.eye(3, dtype=np.float32))
    for i in range(20):
        store.add(np.full(3, i, np.float32))
    assert store.rows.shape == (23, 3)
    np.testing.assert_array_equal(store.rows[:3], np.eye(3))
    np.testing.assert_array_equal(store.rows[3:, 0], np.arange(20))


def test_a_space_of_two_sources_searches_the_other_one():
    from shopee_match.apply.service import Space

    rows = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], np.float32)
    codes = np.array([0, 1, 0, 1])
    query = np.array([[1, 0]], np.float32)
    for vectors in (rows, sparse.csr_matrix(rows)):
        space = Space(vectors, sources=codes)
        q = sparse.csr_matrix(query) if sparse.issparse(vectors) else query
        assert space.search(q, 3, exclude=0)[1].tolist() == [1, 3, -1]
        assert space.search(q, 3, exclude=1)[1].tolist() == [0, 2, -1]
        assert space.search(q, 3)[1].tolist() == [0, 1, 2]
        space.add(q, 1)
        assert space.search(q, 2, exclude=0)[1].tolist() == [4, 1]


def test_sparse_space_search_orders_ties_by_row():
    from shopee_match.apply.service import Space

    rows = sparse.csr_matrix(np.array([[0, 1], [1, 0], [1, 0], [0.6, 0.8]], np.float32))
    sims, found = Space(rows).search(sparse.csr_matrix(np.array([[1, 0]], np.float32)), 6)
    assert found.tolist() == [1, 2, 3, 0, -1, -1]
    np.testing.assert_allclose(sims[:4], [1, 1, 0.6, 0])
