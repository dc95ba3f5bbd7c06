"""Encoders: alignment, normalisation, missing inputs; the clip path on a tiny random OpenCLIP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shopee_match.data.postings import load_postings
from shopee_match.embed.embeddings import embed_dataset
from shopee_match.embed.encoders import make_encoder
from shopee_match.embed.identity import model_identity
from shopee_match.embed.tfidf import tfidf_vectors


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (40, 30), colour).save(path)
        paths.append(str(path))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    return paths + [str(tmp_path / "bad.jpg"), str(tmp_path / "missing.jpg")]


@pytest.mark.parametrize("batch_size", [2, 64])  # with and without DataLoader workers
def test_image_encoder_aligns_normalises_and_flags_bad_files(images, batch_size):
    enc = make_encoder("timm:test_efficientnet:none", "image", image_size=48,
                       batch_size=batch_size, device="cpu")
    vectors, ok = enc.encode(images)
    assert vectors.shape == (5, enc.dim) and vectors.dtype == np.float32
    assert ok.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, rtol=1e-5)
    assert not vectors[3:].any()  # zero vectors for unreadable rows
    rev, _ = enc.encode(images[::-1])
    np.testing.assert_allclose(rev[::-1], vectors, atol=1e-5)


def test_clip_profile_path_with_tiny_random_model(tiny_clip, images):
    img = make_encoder(tiny_clip, "image", device="cpu")
    txt = make_encoder(tiny_clip, "clip_text", device="cpu")
    v, ok = img.encode(images)
    t, tok = txt.encode(["red box", "", "green box"])
    assert v.shape == (5, 32) and t.shape == (3, 32)
    assert tok.tolist() == [True, False, True] and not t[1].any()
    np.testing.assert_allclose(np.linalg.norm(t[[0, 2]], axis=1), 1.0, rtol=1e-5)
    assert img.model_id == txt.model_id == "open_clip:tiny-clip-test:random"


def test_model_identity_follows_weights_file(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"a")
    first = model_identity(f"timm:resnet18:{weights}")
    weights.write_bytes(b"b")
    assert model_identity(f"timm:resnet18:{weights}") != first
    with pytest.raises(ValueError, match="Unknown encoder spec"):
        model_identity("keras:x")
    with pytest.raises(ValueError, match="cannot serve modality"):
        make_encoder("sbert:pypi-minilm", "image")


def test_tfidf_rows_are_unit_and_similar_titles_closer():
    x = tfidf_vectors(["Kopi Kapal Api 25gr", "kopi kapal api 25 gr", "Popok Merries XL", ""])
    sims = (x @ x.T).toarray()
    np.testing.assert_allclose(np.diag(sims)[:3], 1.0, rtol=1e-5)
    assert sims[0, 1] > 0.5 > sims[0, 2] and sims[3].sum() == 0


def test_offline_profile_separates_products(data_root):
    df, _ = load_postings(data_root / "demo-tiny" / "train.csv", progress=False)
    df = df.head(60)
    out = embed_dataset(df, "offline", image_size=96, cache_dir=data_root / "cache",
                        progress=False)
    assert set(out) == {"image", "text", "tfidf"}
    same = df["label_group"].to_numpy()[:, None] == df["label_group"].to_numpy()[None, :]
    np.fill_diagonal(same, False)
    for modality in ("image", "text"):
        v = out[modality].vectors
        sims = v @ v.T
        assert sims[same].mean() > sims[~same].mean() + 0.1, modality
    again = embed_dataset(df, "offline", image_size=96, cache_dir=data_root / "cache",
                          progress=False)
    assert again["image"].from_cache and again["text"].from_cache
    np.testing.assert_array_equal(again["image"].vectors, out["image"].vectors)


def test_titles_only_dataset_has_no_image_modality(tiny_clip, tmp_path):
    df = pd.DataFrame({"posting_id": ["a", "b"], "title": ["x y", "x z"]})
    out = embed_dataset(df, {"clip_text": tiny_clip}, cache_dir=tmp_path, progress=False)
    assert set(out) == {"clip_text", "tfidf"}
    with pytest.raises(ValueError, match="Unknown model profile"):
        embed_dataset(df, "nope", cache_dir=tmp_path)


def test_embed_images_and_texts_functions(images, tiny_clip):
    from shopee_match.embed.encoders import embed_images, embed_texts

    v = embed_images(images, spec="timm:test_efficientnet:none", image_size=48, device="cpu",
                     progress=False)
    assert v.dtype == np.float32 and v.shape[0] == 5 and not v[3:].any()
    t = embed_texts(["a red box", ""], spec=tiny_clip, device="cpu", progress=False)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), [1.0, 0.0], atol=1e-5)


def test_max_tokens_truncates_and_keys_the_cache(tmp_path):
    from shopee_match.embed.encoders import embed_texts

    long = "kopi " * 40 + "kapal api"
    short = "kopi " * 40 + "torabika"
    full = embed_texts([long, short], progress=False)
    cut = embed_texts([long, short], max_tokens=8, progress=False)
    assert float(full[0] @ full[1]) < 0.9999  # the tails differ...
    np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)  # ...and are cut off at 8 tokens
    df = pd.DataFrame({"posting_id": ["a", "b"], "title": [long, short]})
    first = embed_dataset(df, "offline", modalities=["text"], max_tokens=8, cache_dir=tmp_path,
                          progress=False)
    other = embed_dataset(df, "offline", modalities=["text"], max_tokens=16, cache_dir=tmp_path,
                          progress=False)
    assert not first["text"].from_cache and not other["text"].from_cache


def test_photos_in_object_storage_are_read_through_fsspec(tmp_path):
    """A catalog whose image column holds URLs (fsspec's memory:// stands in for s3:// or
    gs://) needs no images folder; the photos are read when embedded, and a missing one is
    flagged there (zero row, not ok), not fatal."""
    import io

    import fsspec

    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(buffer, "JPEG")
    with fsspec.open("memory://shop/photos/red.jpg", "wb") as f:
        f.write(buffer.getvalue())
    urls = ["memory://shop/photos/red.jpg", "memory://shop/photos/gone.jpg"]
    pd.DataFrame({"posting_id": ["a", "b"], "title": ["red mug", "blue mug"], "image": urls,
                  "label_group": [1, 2]}).to_csv(tmp_path / "catalog.csv", index=False)
    postings, _ = load_postings(tmp_path / "catalog.csv", progress=False)
    assert postings["image_path"].tolist() == urls
    encoder = make_encoder("timm:test_efficientnet:none", "image", image_size=32,
                           device="cpu")
    vectors, ok = encoder.encode(postings["image_path"].tolist())
    assert ok.tolist() == [True, False]
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0) and not vectors[1].any()
