"""The embedding cache rejects foreign or misaligned entries and resumes interrupted runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopee_match.data.datasets import dataset_fingerprint
from shopee_match.embed.cache import EmbeddingCache, cache_meta

IDS = [f"p{i}" for i in range(10)]


class CountingEncoder:
    """Encodes row i as the unit vector at angle i / 10; counts rows; can fail after some
    calls."""

    def __init__(self, fail_on_call=None):
        self.rows = 0
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, rows: slice):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("interrupted")
        n = rows.stop - rows.start
        self.rows += n
        angles = np.arange(rows.start, rows.stop) / 10
        return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32), \
            np.ones(n, bool)


def row_numbers(vectors: np.ndarray) -> list[int]:
    """Which row each vector encodes (inverts CountingEncoder)."""
    return np.rint(np.arctan2(vectors[:, 1], vectors[:, 0]) * 10).astype(int).tolist()


def meta(model="m1", data="d1"):
    return cache_meta(model, data, {"image_size": 64})


def test_second_call_loads_without_computing(tmp_path):
    cache = EmbeddingCache(tmp_path)
    enc = CountingEncoder()
    v1, _, hit1 = cache.get_or_compute(meta(), IDS, enc, chunk_rows=4)
    v2, _, hit2 = cache.get_or_compute(meta(), IDS, enc, chunk_rows=4)
    assert (hit1, hit2) == (False, True) and enc.rows == 10
    np.testing.assert_array_equal(v1, v2)
    assert row_numbers(v1) == list(range(10))
    assert not list(tmp_path.glob("*.parts")) and not list(tmp_path.glob(".*tmp"))


def test_other_model_or_data_gets_its_own_entry(tmp_path):
    cache = EmbeddingCache(tmp_path)
    enc = CountingEncoder()
    cache.get_or_compute(meta("m1"), IDS, enc)
    cache.get_or_compute(meta("m2"), IDS, enc)
    cache.get_or_compute(meta("m1", "d2"), IDS, enc)
    assert enc.rows == 30


def test_foreign_file_under_the_key_is_rejected(tmp_path):
    cache = EmbeddingCache(tmp_path)
    foreign = cache.path(meta("m2"))
    EmbeddingCache(tmp_path).save(meta("m2"), IDS, np.ones((10, 2)), np.ones(10, bool))
    foreign.rename(cache.path(meta("m1")))  # a file copied in from another model
    with pytest.warns(UserWarning, match="was built with"):
        assert cache.load(meta("m1"), IDS) is None


def test_other_ids_or_order_are_rejected(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.save(meta(), IDS, np.zeros((10, 2)), np.ones(10, bool))
    with pytest.warns(UserWarning, match="other posting ids"):
        assert cache.load(meta(), IDS[::-1]) is None
    enc = CountingEncoder()
    with pytest.warns(UserWarning):
        vectors, _, hit = cache.get_or_compute(meta(), IDS[::-1], enc)
    assert not hit and enc.rows == 10


def test_corrupt_file_is_recomputed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.path(meta()).parent.mkdir(parents=True, exist_ok=True)
    cache.path(meta()).write_bytes(b"PK\x03\x04 truncated")
    enc = CountingEncoder()
    with pytest.warns(UserWarning, match="unreadable"):
        _, _, hit = cache.get_or_compute(meta(), IDS, enc)
    assert not hit and enc.rows == 10


def test_interrupted_run_resumes_from_saved_chunks(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(meta(), IDS, CountingEncoder(fail_on_call=3), chunk_rows=3)
    assert not cache.path(meta()).exists()  # no half-written entry
    resumed = CountingEncoder()
    vectors, _, hit = cache.get_or_compute(meta(), IDS, resumed, chunk_rows=3)
    assert not hit and resumed.rows == 4  # chunks 0-2 and 3-5 were saved; 6-8, 9 remain
    assert row_numbers(vectors) == list(range(10))
    assert not list(tmp_path.glob("*.parts"))


def test_resumed_chunks_are_checked_and_written_to_a_memory_map(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cache.compute_chunked(meta(), IDS, CountingEncoder(fail_on_call=4), chunk_rows=3)
    [parts] = tmp_path.glob("*.parts")
    stored = np.load(parts / "vectors.npy", mmap_mode="r")
    assert stored.shape == (10, 2) and row_numbers(stored[:9]) == list(range(9))
    assert sorted(p.name for p in parts.glob("*.done")) == [
        "000000000-000000003.done", "000000003-000000006.done", "000000006-000000009.done"]
    damaged = np.load(parts / "vectors.npy", mmap_mode="r+")
    damaged[4] = np.nan  # a marked chunk that no longer holds sound vectors
    damaged.flush()
    del damaged, stored
    resumed = CountingEncoder()
    vectors, ok = cache.compute_chunked(meta(), IDS, resumed, chunk_rows=3)
    assert resumed.rows == 3 + 1 and row_numbers(vectors) == list(range(10)) and ok.all()
    # the same folder left by a run over other ids is not resumed
    with pytest.raises(KeyboardInterrupt):
        cache.compute_chunked(meta(), IDS, CountingEncoder(fail_on_call=2), chunk_rows=3)
    other = CountingEncoder()
    cache.compute_chunked(meta(), IDS[::-1], other, chunk_rows=3)
    assert other.rows == 10


def test_fingerprint_follows_ids_titles_and_image_files(tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"1234")
    df = pd.DataFrame({"posting_id": ["a", "b"], "title": ["x", "y"],
                       "image_path": [str(img), ""]})
    base = dataset_fingerprint(df)
    assert dataset_fingerprint(df.copy()) == base
    assert dataset_fingerprint(df.assign(title=["x", "z"])) != base
    assert dataset_fingerprint(df.iloc[::-1]) != base
    img.write_bytes(b"12345")
    assert dataset_fingerprint(df) != base


@pytest.mark.parametrize("damage,message", [
    (lambda v, ok: (np.where(np.arange(len(v))[:, None] == 3, np.nan, v), ok), "NaN"),
    (lambda v, ok: (v[:, :1], ok), "neither unit vectors"),  # a column cut off
    (lambda v, ok: (v * 3, ok), "neither unit vectors nor zero rows"),
    (lambda v, ok: (np.where(np.arange(len(v))[:, None] == 2, 0, v), ok),
     "neither unit vectors nor zero rows"),  # a zero row flagged as ok
])
def test_unsound_entries_are_recomputed_not_returned(tmp_path, damage, message):
    cache = EmbeddingCache(tmp_path)
    vectors, ok = CountingEncoder()(slice(0, 10))
    cache.save(meta(), IDS, *damage(vectors, ok))
    with pytest.warns(UserWarning, match=message):
        assert cache.load(meta(), IDS) is None
    again, _, hit = cache.get_or_compute(meta(), IDS, CountingEncoder())
    assert not hit and row_numbers(again) == list(range(10))


def test_a_read_only_cache_folder_computes_without_saving(tmp_path, monkeypatch):
    from shopee_match.embed import cache as cache_module

    def read_only(path, mode="wb"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_module, "atomic_write", read_only)
    cache_module._warn_unwritable.cache_clear()
    with pytest.warns(UserWarning, match="Cannot write the embedding cache.*Permission denied"
                      ) as warned:
        vectors, _, hit = EmbeddingCache(tmp_path).get_or_compute(meta(), IDS, CountingEncoder(),
                                                                  chunk_rows=4)
    assert len([w for w in warned if "Cannot write" in str(w.message)]) == 1  # 4 writes failed
    assert not hit and row_numbers(vectors) == list(range(10))
    assert not list(tmp_path.rglob("*.npz"))
