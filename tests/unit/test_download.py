"""Kaggle download: credentials message, archive unpacking."""

from __future__ import annotations

import zipfile

import pytest

from shopee_match.data.download import (
    KaggleCredentialsError,
    download_shopee,
    has_kaggle_credentials,
    unpack_shopee,
)


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))


def shopee_zip(path, prefix="", skip=()):
    with zipfile.ZipFile(path, "w") as zf:
        files = {"train.csv": "posting_id,title\n", "test.csv": "posting_id,title\n",
                 "sample_submission.csv": "posting_id,matches\n",
                 "train_images/a.jpg": "x", "test_images/b.jpg": "y"}
        for name, content in files.items():
            if not any(name.startswith(s) for s in skip):
                zf.writestr(prefix + name, content)
    return path


def test_missing_credentials_give_one_clear_error(no_credentials, tmp_path):
    assert not has_kaggle_credentials()
    with pytest.raises(KaggleCredentialsError, match="kaggle.json") as err:
        download_shopee(tmp_path / "shopee")
    assert "KAGGLE_USERNAME" in str(err.value)


def test_credentials_from_environment(no_credentials, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    assert not has_kaggle_credentials()
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert has_kaggle_credentials()


@pytest.mark.parametrize("prefix", ["", "shopee-product-matching/"])
def test_unpack_builds_layout_and_is_idempotent(tmp_path, prefix):
    archive = shopee_zip(tmp_path / "s.zip", prefix)
    dest = unpack_shopee(archive, tmp_path / "shopee")
    assert (dest / "train_images" / "a.jpg").read_text() == "x"
    (dest / "train.csv").write_text("edited")
    unpack_shopee(archive, dest)  # same archive: nothing rewritten
    assert (dest / "train.csv").read_text() == "edited"


def test_download_skips_when_already_unpacked(no_credentials, tmp_path):
    dest = unpack_shopee(shopee_zip(tmp_path / "s.zip"), tmp_path / "shopee")
    assert download_shopee(dest) == dest  # no credentials needed


def test_unpack_rejects_wrong_archive(tmp_path):
    archive = shopee_zip(tmp_path / "s.zip", skip=("test_images",))
    with pytest.raises(ValueError, match=r"\['test_images'\] are missing"):
        unpack_shopee(archive, tmp_path / "shopee")


def test_unpack_rejects_paths_outside_dest(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../evil.txt", "x")
        zf.writestr("train.csv", "x")
    with pytest.raises(ValueError, match="outside"):
        unpack_shopee(tmp_path / "evil.zip", tmp_path / "shopee")


def test_download_with_credentials_goes_through_the_kaggle_package(no_credentials, tmp_path,
                                                                   monkeypatch):
    """With credentials, the real kaggle import path runs (kaggle 2.x needs `six`, which it
    does not declare: the kit does); only the transfer itself is replaced."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    calls = []

    def transfer(self, competition, path, force, quiet):
        calls.append(competition)
        shopee_zip(tmp_path / "shopee" / f"{competition}.zip")

    monkeypatch.setattr(KaggleApi, "authenticate", lambda self: None)
    monkeypatch.setattr(KaggleApi, "competition_download_files", transfer)
    dest = download_shopee(tmp_path / "shopee")
    assert calls == ["shopee-product-matching"] and (dest / "test_images" / "b.jpg").is_file()
    import kaggle.models.upload_file  # noqa: F401  (imports six)
