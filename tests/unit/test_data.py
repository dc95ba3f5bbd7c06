"""Loading and validating the Shopee layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from shopee_match.data.postings import (
    ShopeeDataError,
    clean_title,
    decode_byte_escapes,
    load_postings,
)


def write_dataset(folder: Path, rows: list[dict], images: dict[str, bytes | None] | None = None):
    """train.csv + train_images/ with the given image files (None = absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    (folder / "train_images").mkdir(exist_ok=True)
    for name, content in (images or {}).items():
        if content is not None:
            (folder / "train_images" / name).write_bytes(content)
    return folder / "train.csv"


def jpeg_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "x.jpg"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path)
    return path.read_bytes()


def rows(n=4, **overrides):
    base = [{"posting_id": f"train_{i}", "image": f"{i}.jpg", "image_phash": "ab" * 8,
             "title": f"Kopi Kapal Api {i}", "label_group": 10 + i // 2} for i in range(n)]
    for key, values in overrides.items():
        for row, value in zip(base, values):
            row[key] = value
    return base


def test_clean_dataset_loads_with_flags(tmp_path):
    jpg = jpeg_bytes(tmp_path)
    csv = write_dataset(tmp_path / "d", rows(), {f"{i}.jpg": jpg for i in range(4)})
    df, report = load_postings(csv, progress=False)
    assert list(df["posting_id"]) == [f"train_{i}" for i in range(4)]
    assert df["image_ok"].all() and df["title_ok"].all()
    assert report.ok and report.has_images and report.has_labels
    assert df["label_group"].dtype == "int64"
    assert Path(df["image_path"][0]).read_bytes() == jpg


def test_missing_columns_are_named(tmp_path):
    csv = write_dataset(tmp_path / "d", [{"posting_id": "a", "name": "x"}])
    with pytest.raises(ShopeeDataError, match=r"lacks required column\(s\) \['title'\]"):
        load_postings(csv)


def test_duplicate_ids_name_the_id_and_lines(tmp_path):
    data = rows(3, posting_id=["a", "b", "a"])
    csv = write_dataset(tmp_path / "d", data)
    with pytest.raises(ShopeeDataError, match=r"'a' on lines 2, 4"):
        load_postings(csv, check_images="none")


def test_empty_and_nan_titles_are_kept_and_flagged(tmp_path):
    csv = write_dataset(tmp_path / "d", rows(3, title=["ok title", "", None]))
    df, report = load_postings(csv, check_images="none")
    assert len(df) == 3
    assert list(df["title_ok"]) == [True, False, False]
    assert list(df["title"]) == ["ok title", "", ""]
    assert [line for line, _ in report.empty_titles] == [3, 4]
    assert "empty or missing title" in report.summary()


def test_byte_escapes_and_mojibake_are_repaired_and_raw_kept(tmp_path):
    raw = r"Caf\xc3\xa9 Kopi \xf0\x9f\x94\xa5"
    csv = write_dataset(tmp_path / "d", rows(2, title=[raw, "CafÃ© Latte"]))
    df, report = load_postings(csv, check_images="none")
    assert list(df["title"]) == ["Café Kopi \U0001F525", "Café Latte"]
    assert df["title_raw"][0] == raw
    assert len(report.repaired_titles) == 2


def test_invalid_escape_runs_are_left_alone():
    assert decode_byte_escapes(r"bad \xff\xfe end") == r"bad \xff\xfe end"
    assert clean_title(float("nan")) == ""


def test_missing_and_corrupt_images_are_counted_not_fatal(tmp_path):
    jpg = jpeg_bytes(tmp_path)
    images = {"0.jpg": jpg, "1.jpg": None, "2.jpg": b"not a jpeg at all", "3.jpg": jpg}
    csv = write_dataset(tmp_path / "d", rows(), images)
    df, report = load_postings(csv, progress=False)
    assert len(df) == 4
    assert list(df["image_ok"]) == [True, False, False, True]
    assert [r[0] for r in report.missing_images] == [3]
    assert [r[0] for r in report.unreadable_images] == [4]
    table = report.to_frame().set_index("problem")["count"]
    assert table["image file missing"] == 1 and table["image file unreadable"] == 1
    assert not report.ok


def test_truncated_image_is_caught_by_decode_check(tmp_path):
    jpg = jpeg_bytes(tmp_path)
    csv = write_dataset(tmp_path / "d", rows(1), {"0.jpg": jpg[: len(jpg) // 2]})
    df, report = load_postings(csv, check_images="decode", progress=False)
    assert not df["image_ok"][0] and len(report.unreadable_images) == 1


def test_missing_images_folder_is_an_error(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    pd.DataFrame(rows(2)).to_csv(folder / "train.csv", index=False)
    with pytest.raises(ShopeeDataError, match="Images folder .*train_images not found"):
        load_postings(folder / "train.csv")


def test_titles_only_dataset(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    pd.DataFrame([{"posting_id": "a", "title": "x", "label_group": 1},
                  {"posting_id": "b", "title": "y", "label_group": 1}]).to_csv(
        folder / "train.csv", index=False)
    df, report = load_postings(folder / "train.csv")
    assert not report.has_images and not df["image_ok"].any()


def test_test_csv_without_labels(tmp_path):
    data = [{k: v for k, v in r.items() if k != "label_group"} for r in rows(2)]
    csv = write_dataset(tmp_path / "d", data)
    df, report = load_postings(csv, check_images="none")
    assert not report.has_labels and "label_group" not in df


def test_empty_label_group_names_lines(tmp_path):
    csv = write_dataset(tmp_path / "d", rows(3, label_group=[1, "", 2]))
    with pytest.raises(ShopeeDataError, match=r"label_group is empty .* \(e.g. 3\)"):
        load_postings(csv, check_images="none")


@pytest.mark.parametrize("labels,expected", [
    (["f123", "f123", "g7"], ["f123", "f123", "g7"]),  # strings: every notebook used to stop
    (["1.2", "1.7", "1.2"], ["1.2", "1.7", "1.2"]),  # were rounded into one group
    (["99999999999999999999", "99999999999999999998", "1"],  # became INT64_MIN
     ["99999999999999999999", "99999999999999999998", "1"]),
    (["inf", "-inf", "nan"], ["inf", "-inf", "nan"]),  # raw pandas error
    (["007", "7", "7"], ["007", "7", "7"]),  # compared as text: two groups
])
def test_any_label_group_is_kept_exactly_as_written(tmp_path, labels, expected):
    csv = write_dataset(tmp_path / "d", rows(3, label_group=labels))
    df, _ = load_postings(csv, check_images="none")
    assert df["label_group"].tolist() == expected
    assert df["label_group"].nunique() == len(set(expected))


def test_shopee_integer_groups_stay_int64(tmp_path):
    csv = write_dataset(tmp_path / "d", rows(3, label_group=[249114794, -3, 0]))
    df, _ = load_postings(csv, check_images="none")
    assert df["label_group"].dtype == "int64" and df["label_group"].tolist() == [249114794, -3, 0]


def test_an_unquoted_comma_names_the_line_instead_of_shifting_columns(tmp_path):
    csv = tmp_path / "test.csv"
    csv.write_text("posting_id,image,image_phash,title\n"
                   "test_1,a.jpg,ff00,Kopi, Kapal Api\n"  # unquoted comma: one field too many
                   "test_2,b.jpg,ff01,Teh Botol\n")
    with pytest.raises(ShopeeDataError, match=r"line 2 has 5 fields.*must be quoted"):
        load_postings(csv, check_images="none")


def test_line_numbers_stay_right_after_a_multi_line_title(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text('posting_id,title\na,"two\nlines"\nb,ok\na,again\n')
    with pytest.raises(ShopeeDataError, match=r"'a' on lines 2, 5"):
        load_postings(csv)


def test_na_and_padded_ids_are_ids(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("posting_id,title\nNA,first\nx,second\n")
    df, _ = load_postings(csv)
    assert df["posting_id"].tolist() == ["NA", "x"]  # "NA" is not an empty id
    csv.write_text("posting_id,title\nx,first\n x,second\n")
    with pytest.raises(ShopeeDataError, match=r"'x' on lines 2, 3"):  # " x" is "x"
        load_postings(csv)


def test_empty_and_header_only_csv_name_the_file(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("")
    with pytest.raises(ShopeeDataError, match=r"train.csv is empty.*header line"):
        load_postings(csv)
    csv.write_text("posting_id,title\n")
    with pytest.raises(ShopeeDataError, match=r"train.csv has a header but no postings"):
        load_postings(csv)


def test_a_cp1252_csv_is_read_with_a_warning_saying_how_to_convert(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_bytes("posting_id,title\na,Caf\u00e9 \u201cenak\u201d\n".encode("cp1252"))
    with pytest.warns(UserWarning, match=r"not UTF-8.*cp1252.*iconv"):
        df, _ = load_postings(csv)
    assert df["title_raw"][0] == "Caf\u00e9 \u201cenak\u201d"


def test_columns_are_mapped_by_argument_or_dataset_yaml(tmp_path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    pd.DataFrame({"sku": ["s1", "s2"], "name": ["Kopi", "Teh"], "cluster": ["c1", "c1"]}
                 ).to_csv(folder / "train.csv", index=False)
    df, report = load_postings(folder / "train.csv", columns="id=sku,title=name,group=cluster")
    assert df["posting_id"].tolist() == ["s1", "s2"] and report.has_labels
    assert df["label_group"].tolist() == ["c1", "c1"]
    (folder / "dataset.yaml").write_text("columns:\n  id: sku\n  title: name\n")
    df, report = load_postings(folder / "train.csv")
    assert df["title"].tolist() == ["Kopi", "Teh"] and not report.has_labels
    with pytest.raises(ValueError, match=r"Unknown column name\(s\) \['price'\]"):
        load_postings(folder / "train.csv", columns="price=cost")
    with pytest.raises(ShopeeDataError, match=r"title \(mapped from 'label'\)"):
        load_postings(folder / "train.csv", columns={"title": "label"})
    (folder / "dataset.yaml").write_text("columns: [id, sku]\n")
    with pytest.raises(ShopeeDataError, match=r"dataset.yaml is not a valid"):
        load_postings(folder / "train.csv")


def test_missing_csv_says_how_to_get_data(tmp_path):
    with pytest.raises(ShopeeDataError, match="shopee-match demo"):
        load_postings(tmp_path / "nope.csv")


def test_load_dataset_generates_demo_data_on_first_use(tmp_path, monkeypatch):
    from shopee_match.data.datasets import load_dataset

    monkeypatch.setenv("SHOPEE_MATCH_DATA", str(tmp_path))
    monkeypatch.setattr("shopee_match.data.demo.SIZES", {"tiny": 24, "demo": 24, "shopee": 24})
    df, report = load_dataset("demo-tiny")
    assert len(df) == 24 and report.ok
    assert (tmp_path / "demo-tiny" / "demo.json").is_file()


def as_model_sees_it(path, size=None):
    """The pixels the image encoders' dataset hands to the model's transform."""
    import numpy as np

    from shopee_match.embed.encoders import ImageFiles

    pixels, ok = ImageFiles([str(path)], np.asarray, size or 64)[0]
    assert ok
    return pixels


def test_sixteen_bit_pngs_are_scaled_not_clipped_to_white(tmp_path):
    import numpy as np

    for name, value in (("dark.png", 10_000), ("light.png", 50_000)):
        Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(tmp_path / name)
    assert Image.open(tmp_path / "dark.png").mode.startswith("I")
    dark, light = (as_model_sees_it(tmp_path / n) for n in ("dark.png", "light.png"))
    assert dark.shape == (8, 8, 3) and dark.max() == round(10_000 * 255 / 65535)
    assert light.max() == round(50_000 * 255 / 65535) < 255


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to show
    Image.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / "side.jpg", exif=exif)
    assert as_model_sees_it(tmp_path / "side.jpg").shape == (40, 20, 3)


def test_a_truncated_jpeg_is_counted_as_unreadable(tmp_path):
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.jpg")
    whole = (tmp_path / "big.jpg").read_bytes()
    cut = whole[:int(len(whole) * 0.7)]  # the header is intact: verify() passes
    csv = write_dataset(tmp_path / "d", rows(2), {"0.jpg": whole, "1.jpg": cut})
    df, report = load_postings(csv, progress=False)
    assert df["image_ok"].tolist() == [True, False]
    assert [(r[0], r[3]) for r in report.unreadable_images] == [(3, "truncated file")]


def test_image_paths_leaving_the_images_folder_are_refused_unless_allowed(tmp_path):
    jpg = jpeg_bytes(tmp_path)
    (tmp_path / "secret.jpg").write_bytes(jpg)
    csv = write_dataset(tmp_path / "d", rows(3, image=["0.jpg", "../../secret.jpg",
                                                      str(tmp_path / "secret.jpg")]),
                        {"0.jpg": jpg})
    df, report = load_postings(csv, progress=False)
    assert df["image_ok"].tolist() == [True, False, False] and df["image_path"][1] == ""
    assert [r[0] for r in report.outside_images] == [3, 4] and not report.ok
    assert "outside the images folder" in report.summary()
    df, report = load_postings(csv, progress=False, allow_outside_images=True)
    assert df["image_ok"].all() and not report.outside_images


@pytest.mark.parametrize("labels,message", [
    ([1, 2, 3, 4], "no two of its 4 listings share a label_group"),
    ([5, 5, 5], "all 3 listings share one label_group"),
    (None, "no label_group column: it is unlabelled"),
])
def test_data_that_cannot_be_matched_stops_with_one_clear_message(labels, message):
    from shopee_match.data.postings import require_duplicates

    postings = pd.DataFrame({"posting_id": ["a", "b", "c", "d"][:len(labels or [0] * 4)]})
    if labels is not None:
        postings["label_group"] = labels
    with pytest.raises(ShopeeDataError, match=message):
        require_duplicates(postings, "my-data")
    require_duplicates(pd.DataFrame({"label_group": [1, 1, 2]}))  # enough: no error


def test_a_parquet_catalog_loads_as_its_csv_does_block_by_block(tmp_path, monkeypatch):
    """The same listings as Parquet (typed columns, a null title, photos beside it) load
    to the same postings as from CSV, also when read in blocks of two rows; only ``line``
    differs (a Parquet file's rows count from 1)."""
    import shopee_match.data.postings as postings_module
    from shopee_match.data.datasets import catalog_path, load_dataset

    jpg = jpeg_bytes(tmp_path)
    data = rows(5, title=["Kopi 1", None, "Caf\\xc3\\xa9 2", "Teh 3", "Gula 4"],
                posting_id=["007", "8", "9", "10", "11"])
    csv = write_dataset(tmp_path / "csv", data, {f"{i}.jpg": jpg for i in range(5)})
    folder = write_dataset(tmp_path / "pq", data, {f"{i}.jpg": jpg for i in range(5)}).parent
    (folder / "train.csv").unlink()
    typed = pd.DataFrame(data).astype({"posting_id": str, "label_group": "int64"})
    typed.to_parquet(folder / "train.parquet", index=False)
    monkeypatch.setattr(postings_module, "PARQUET_BLOCK_ROWS", 2)
    assert catalog_path(folder, ("test", "train")) == folder / "train.parquet"
    from_csv, csv_report = load_postings(csv, progress=False)
    from_parquet, report = load_dataset(str(folder))
    assert from_parquet["line"].tolist() == [1, 2, 3, 4, 5]
    assert from_csv["line"].tolist() == [2, 3, 4, 5, 6]
    keep = ["posting_id", "title", "title_raw", "title_ok", "image_ok", "label_group"]
    pd.testing.assert_frame_equal(from_parquet[keep], from_csv[keep])
    assert from_parquet["posting_id"][0] == "007"  # an id stays text, zeros kept
    assert "row 2: 8" in report.summary() and "line 3: 8" in csv_report.summary()


def test_a_bad_parquet_catalog_names_the_file_row_and_column(tmp_path):
    path = tmp_path / "catalog.parquet"
    pd.DataFrame({"posting_id": ["a", ""], "title": ["x", "y"]}).to_parquet(path)
    with pytest.raises(ShopeeDataError, match=r"catalog.parquet: empty posting_id on row\(s\) 2"):
        load_postings(path)
    pd.DataFrame({"posting_id": ["a", "b"], "title": ["x", "y"], "tags": [[1], [2]]}
                 ).to_parquet(path)
    with pytest.raises(ShopeeDataError, match=r"column 'tags' holds list<.*not text or num"):
        load_postings(path)
    path.write_text("posting_id,title\na,x\n")  # a CSV under a Parquet name
    with pytest.raises(ShopeeDataError, match=r"catalog.parquet is not a readable Parquet"):
        load_postings(path)
    pd.DataFrame({"posting_id": [], "title": []}).to_parquet(path)
    with pytest.raises(ShopeeDataError, match=r"catalog.parquet has no rows"):
        load_postings(path)
    with pytest.raises(ShopeeDataError, match=r"file:///.*/nope.parquet not found"):
        load_postings((tmp_path / "nope.parquet").as_uri())  # a URL (s3://, ...) read by fsspec


def test_a_catalog_at_a_url_has_its_photos_beside_it_as_urls(tmp_path):
    jpg = jpeg_bytes(tmp_path)
    csv = write_dataset(tmp_path / "d", rows(3), {f"{i}.jpg": jpg for i in range(3)})
    local, _ = load_postings(csv, progress=False)
    remote, report = load_postings(csv.as_uri(), progress=False)
    assert remote["image_path"].tolist() == [f"{(csv.parent / 'train_images').as_uri()}/{i}.jpg"
                                             for i in range(3)]
    assert remote["image_ok"].all() and report.source == csv.as_uri()
    pd.testing.assert_frame_equal(remote.drop(columns="image_path"),
                                  local.drop(columns="image_path"))
