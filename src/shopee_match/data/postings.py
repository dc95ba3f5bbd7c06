"""Load and validate postings in the Shopee layout.

A dataset folder holds ``train.csv`` (``posting_id, image, image_phash, title,
label_group``) and ``train_images/``; ``test.csv`` has no ``label_group``. A
titles-only dataset simply has no ``image`` column. A catalog may be a Parquet file
instead of a CSV (``train.parquet``; read block by block, every column as text). Loading
never drops a posting: problems are repaired where that is safe (byte escapes, mojibake) or
flagged in a column (``image_ok``, ``title_ok``) and listed in a
:class:`ValidationReport`. Problems that would make every later result wrong
(missing columns, duplicate ids) raise :class:`ShopeeDataError`.

A team's own catalog may name its columns differently: a mapping (``id=sku,title=name,
image=photo,group=cluster`` on the CLI, ``COLUMNS`` in the notebooks, or ``columns:`` in a
``dataset.yaml`` beside the CSV) renames them on reading. An optional ``source`` column
(``source=shop``) says which shop or feed each listing comes from: with two or more
sources, matches are linked across them (see :mod:`shopee_match.match.sources`).
``label_group`` may hold any value: integers written canonically (Shopee's) stay int64,
anything else is kept as text (``"f123"``, ``"1.2"``, ``"99999999999999999999"``), never
rounded or merged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from shopee_match.data.schema import (
    IMAGE,
    IMAGE_OK,
    IMAGE_PATH,
    IMAGE_PHASH,
    LABEL_GROUP,
    LINE,
    POSTING_ID,
    SOURCE,
    TITLE,
    TITLE_OK,
    TITLE_RAW,
)
from shopee_match.files import is_url, open_binary

REQUIRED_COLUMNS = (POSTING_ID, TITLE)
#: names accepted on the left of a column mapping, and the kit column each one means
COLUMN_NAMES = {"id": POSTING_ID, POSTING_ID: POSTING_ID, TITLE: TITLE,
                IMAGE: IMAGE, "group": LABEL_GROUP, LABEL_GROUP: LABEL_GROUP,
                "phash": IMAGE_PHASH, IMAGE_PHASH: IMAGE_PHASH, SOURCE: SOURCE}
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")
IMAGE_CHECKS = ("none", "exists", "header", "decode")
_BYTE_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")
_EXAMPLES = 5
#: file endings read as Parquet (anything else as CSV)
PARQUET_SUFFIXES = (".parquet", ".pq")
#: rows per block read from a Parquet catalog
PARQUET_BLOCK_ROWS = 65_536


class ShopeeDataError(ValueError):
    """A dataset cannot be used as it is; the message says where and what to do."""


@dataclass
class ValidationReport:
    """What loading found wrong with a file, row by row (a CSV's line numbers, a Parquet
    file's row numbers: ``unit``)."""

    source: str
    unit: str = "line"
    n_rows: int = 0
    has_images: bool = False
    has_labels: bool = False
    empty_titles: list[tuple[int, str]] = field(default_factory=list)
    repaired_titles: list[tuple[int, str, str, str]] = field(default_factory=list)
    missing_images: list[tuple[int, str, str]] = field(default_factory=list)
    unreadable_images: list[tuple[int, str, str, str]] = field(default_factory=list)
    outside_images: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing had to be flagged (repaired titles do not count)."""
        return not (self.empty_titles or self.missing_images or self.unreadable_images
                    or self.outside_images)

    def to_frame(self) -> pd.DataFrame:
        """One row per kind of problem: count and a few examples."""
        rows = [
            ("empty or missing title", self.empty_titles,
             lambda r: f"{self.unit} {r[0]}: {r[1]}"),
            ("title repaired (byte escapes / mojibake)", self.repaired_titles,
             lambda r: f"{self.unit} {r[0]}: {r[2]!r} -> {r[3]!r}"),
            ("image file missing", self.missing_images,
             lambda r: f"{self.unit} {r[0]}: {r[2]}"),
            ("image file unreadable", self.unreadable_images,
             lambda r: f"{self.unit} {r[0]}: {r[2]} ({r[3]})"),
            ("image path outside the images folder (refused)", self.outside_images,
             lambda r: f"{self.unit} {r[0]}: {r[2]}"),
        ]
        return pd.DataFrame(
            [
                {"problem": name, "count": len(items),
                 "examples": "; ".join(fmt(item) for item in items[:_EXAMPLES])}
                for name, items, fmt in rows
            ]
        )

    def summary(self) -> str:
        """Human-readable lines, one per kind of problem found."""
        lines = [f"{self.source}: {self.n_rows} postings"]
        for row in self.to_frame().itertuples():
            if row.count:
                lines.append(f"  {row.count} x {row.problem}, e.g. {row.examples}")
        if self.ok and not self.repaired_titles:
            lines.append("  no problems found")
        return "\n".join(lines)


def decode_byte_escapes(text: str) -> str:
    r"""Turn literal UTF-8 byte escapes such as ``Caf\xc3\xa9`` into text (``Café``).

    Runs that are not valid UTF-8 are left as they are.
    """

    def decode(match: re.Match[str]) -> str:
        raw = bytes(int(h, 16) for h in match.group(0).split("\\x")[1:])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return match.group(0)

    return _BYTE_ESCAPES.sub(decode, text)


def clean_title(text: object) -> str:
    """Repair one raw title: NaN -> "", byte escapes and mojibake fixed, spaces trimmed."""
    import ftfy

    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    fixed = " ".join(ftfy.fix_text(decode_byte_escapes(str(text))).split())
    if all(unicodedata.category(ch) in ("Cf", "Zs") for ch in fixed):
        return ""  # only zero-width or format characters (U+200B...): no title to read
    return fixed


def load_postings(
    path: str | Path,
    images_dir: str | Path | None = None,
    check_images: str = "header",
    progress: bool = True,
    columns: str | dict | None = None,
    allow_outside_images: bool = False,
    read_rows: Callable[[Path], pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Read a Shopee-layout CSV (or Parquet file), validate it and return ``(postings,
    report)``.

    The frame keeps every row in file order and adds ``title_raw`` (as read),
    ``title`` (repaired), ``title_ok``, ``image_path``, ``image_ok`` and ``line`` (the CSV
    line each row starts on; a Parquet file's row number, from 1). ``check_images`` is
    ``"none"``, ``"exists"``, ``"header"`` (open and verify the header, default) or
    ``"decode"`` (decode every pixel; slow on big images; a truncated JPEG/PNG counts as
    unreadable either way). ``columns`` maps kit columns to the file's (see
    :func:`parse_columns`); a ``dataset.yaml`` beside the CSV gives the default mapping. An
    image name that leads outside the images folder (``../x.jpg``, an absolute path) is
    refused unless ``allow_outside_images``. ``path`` may be a URL fsspec opens (``s3://``,
    ``gs://``, ``file://``): its photos' names are then read beside it, in
    ``<name>_images/``, when the embedding opens them. ``read_rows`` reads the file's records
    as text (default :func:`read_catalog_rows`; a Ray executor's reads a Parquet file in
    object storage in blocks on its cluster); the checks are the same.
    """
    remote = is_url(path)
    catalog = str(path) if remote else Path(path)  # a Path would fold s3:// into s3:/
    if check_images not in IMAGE_CHECKS:
        raise ValueError(f"check_images must be one of {IMAGE_CHECKS}, not {check_images!r}")
    if not remote and not catalog.is_file():
        raise ShopeeDataError(
            f"{catalog} not found. Generate the demo data with `shopee-match demo`, "
            "download Shopee's with `shopee-match download` or the Amazon-Google benchmark "
            "with `shopee-match download amazon-google`."
        )
    try:
        df = (read_rows or read_catalog_rows)(catalog)
    except FileNotFoundError as err:
        raise ShopeeDataError(f"{catalog} not found ({err}); check the URL.") from err
    mapping = {**({} if remote else dataset_columns(catalog.parent)),
               **parse_columns(columns)}
    absent = {ours: theirs for ours, theirs in mapping.items()  # required ones: see below
              if theirs not in df.columns and ours not in df.columns
              and ours not in REQUIRED_COLUMNS}
    if absent:
        raise ShopeeDataError(
            f"{catalog}: the column mapping names {sorted(absent.values())}, which the file "
            f"does not have (for {sorted(absent)}); its columns are "
            f"{[c for c in df.columns if c != LINE]}. Fix --columns (COLUMNS in the "
            "notebooks, or dataset.yaml).")
    df = df.rename(columns={theirs: ours for ours, theirs in mapping.items()
                            if theirs in df.columns and ours not in df.columns})
    report = ValidationReport(source=str(catalog), n_rows=len(df), unit=_unit(catalog))
    _check_columns(df, catalog, mapping)
    _check_ids(df, catalog)
    report.has_labels = LABEL_GROUP in df.columns
    if report.has_labels:
        _check_labels(df, catalog)
    if SOURCE in df.columns:
        _check_sources(df, catalog)
    _clean_titles(df, report)
    report.has_images = IMAGE in df.columns
    if report.has_images:
        if images_dir:
            folder = Path(images_dir)
        elif remote:  # photos named beside a catalog in object storage: URLs beside it
            base, name = catalog.rsplit("/", 1)
            folder = f"{base}/{PurePosixPath(name).stem}_images"
        else:
            folder = catalog.with_name(catalog.stem + "_images")
        _check_images(df, folder, check_images, report, progress, allow_outside_images)
    else:
        df[IMAGE_PATH] = ""
        df[IMAGE_OK] = False
    return df, report


def read_catalog_rows(path: Path) -> pd.DataFrame:
    """Every record of a catalog as text, plus ``line``: a Parquet file
    (:func:`read_parquet_rows`) by its ending, else a CSV (:func:`read_csv_rows`)."""
    return read_parquet_rows(path) if is_parquet(path) else read_csv_rows(path)


def read_parquet_rows(path: Path, blocks: Iterable | None = None) -> pd.DataFrame:
    """Every column of a Parquet catalog as text (numbers as written, a null as empty), block
    by block, plus ``line``: the row number, from 1. ``blocks``: the file's blocks in order
    (pyarrow tables or batches) as another reader yields them, e.g. Ray Data's
    (:meth:`~shopee_match.distributed.executor.RayExecutor.read_rows`); default: pyarrow's
    own, :data:`PARQUET_BLOCK_ROWS` rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open_binary(path) as handle:
            file = pq.ParquetFile(handle)  # its footer: a file that is not Parquet stops here
            blocks = iter(file.iter_batches(batch_size=PARQUET_BLOCK_ROWS) if blocks is None
                          else blocks)
            columns = _text_columns(blocks, path)
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError) as err:
        raise ShopeeDataError(f"{path} is not a readable Parquet file ({err}). Write it again "
                              "(pandas: df.to_parquet(path)) or give the catalog as CSV.") from err
    df = pd.DataFrame(columns, dtype=object)
    if df.empty:
        raise ShopeeDataError(f"{path} has no rows; nothing to match.")
    df[LINE] = np.arange(1, len(df) + 1)
    return df


def _text_columns(blocks: Iterable, path) -> dict[str, list]:
    """Every column of ``blocks`` (pyarrow tables or batches) as text, joined."""
    import pyarrow as pa

    columns: dict[str, list] = {}
    for block in blocks:
        for name, column in zip(block.schema.names, block.columns):
            try:
                text = column.cast(pa.string()).fill_null("")
            except pa.ArrowNotImplementedError as err:
                raise ShopeeDataError(
                    f"{path}: column {name!r} holds {column.type}, not text or numbers "
                    f"({err}). Write it as text, or leave it out of the file.") from err
            columns.setdefault(name, []).extend(text.to_pylist())
    return columns


def read_csv_rows(path: Path, empty_ok: bool = False) -> pd.DataFrame:
    """Every field of a CSV as text (``NA`` stays ``"NA"``), one row per record, plus ``line``.

    Read with the ``csv`` module so that a record with more or fewer fields than the
    header is an error naming its lines (pandas would shift columns or take the first
    one as an index), and line numbers stay right after quoted multi-line titles. UTF-8
    (with or without BOM) is expected; a file that is not falls back to cp1252 / latin-1
    with a warning saying how to convert it. A header without records is an error unless
    ``empty_ok`` (then no rows).
    """
    import csv
    import io
    import warnings

    with open_binary(path) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        try:
            text, encoding = raw.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            text, encoding = raw.decode("latin-1"), "latin-1"
        warnings.warn(f"{path} is not UTF-8 (byte {err.start}); read it as {encoding}. Check "
                      f"the titles, or convert the file: iconv -f {encoding} -t utf-8 "
                      f"{path.name} > fixed.csv", stacklevel=3)
    if not text.strip():
        raise ShopeeDataError(f"{path} is empty. It needs a header line (posting_id,title,"
                              "...) and one line per posting.")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    rows, lines, bad = [], [], []
    start = reader.line_num + 1
    for record in reader:
        if record:  # blank lines carry no posting
            if len(record) != len(header):
                bad.append(f"line {start} has {len(record)} fields")
            rows.append(record)
            lines.append(start)
        start = reader.line_num + 1
    if bad:
        raise ShopeeDataError(
            f"{path}: {len(bad)} line(s) do not have the header's {len(header)} fields "
            f"({', '.join(header)}): {'; '.join(bad[:_EXAMPLES])}. A title holding a comma "
            "must be quoted (\"a, b\"); fix those lines and load again.")
    if not rows and not empty_ok:
        raise ShopeeDataError(f"{path} has a header but no postings; nothing to match.")
    df = pd.DataFrame(rows, columns=[h.strip() for h in header], dtype=object)
    df[LINE] = lines
    return df


def parse_columns(columns: str | dict | None) -> dict[str, str]:
    """A column mapping as ``{kit column: file column}`` from ``"id=sku,title=name"`` or a
    dict; keys may be short (``id``, ``title``, ``image``, ``group``, ``phash``) or full."""
    if not columns:
        return {}
    if isinstance(columns, str):
        pairs = [part.split("=", 1) for part in columns.split(",") if part.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"Column mapping {columns!r} must look like "
                             "id=sku,title=name,image=photo,group=cluster")
        columns = {k.strip(): v.strip() for k, v in pairs}
    unknown = sorted(set(columns) - set(COLUMN_NAMES))
    if unknown:
        raise ValueError(f"Unknown column name(s) {unknown} in the mapping; use "
                         f"{sorted(COLUMN_NAMES)}.")
    return {COLUMN_NAMES[k]: str(v) for k, v in columns.items()}


def dataset_columns(folder: str | Path) -> dict[str, str]:
    """The column mapping of ``folder/dataset.yaml`` (``columns: {id: sku, ...}``), if any."""
    import yaml

    path = Path(folder) / "dataset.yaml"
    if not path.is_file():
        return {}
    try:
        meta = yaml.safe_load(path.read_text()) or {}
        return parse_columns(meta.get("columns"))
    except (yaml.YAMLError, ValueError, AttributeError) as err:
        raise ShopeeDataError(f"{path} is not a valid dataset description ({err}). It should "
                              "read like:\ncolumns:\n  id: sku\n  title: name") from err


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` names a Parquet file (by its ending)."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def _unit(path: Path) -> str:
    """What a row is called in messages about ``path``: a CSV's line, a Parquet file's row."""
    return "row" if is_parquet(path) else "line"


def _check_columns(df: pd.DataFrame, path: Path, mapping: dict[str, str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        named = [f"{c} (mapped from {mapping[c]!r})" if c in mapping else c for c in missing]
        raise ShopeeDataError(
            f"{path} lacks required column(s) {named}; found "
            f"{[c for c in df.columns if c != LINE]}. A Shopee-layout CSV needs posting_id "
            "and title (image and label_group optional); map other names with "
            "--columns id=...,title=... (COLUMNS in the notebooks, or a dataset.yaml)."
        )


def _check_ids(df: pd.DataFrame, path: Path) -> None:
    df[POSTING_ID] = df[POSTING_ID].str.strip()  # " x" and "x" are one id
    empty = df.index[df[POSTING_ID] == ""]
    if len(empty):
        lines = ", ".join(str(df[LINE][i]) for i in empty[:_EXAMPLES])
        raise ShopeeDataError(f"{path}: empty posting_id on {_unit(path)}(s) {lines}; every row "
                              "needs one.")
    dup = df[POSTING_ID].duplicated(keep=False)
    if dup.any():
        groups = df[dup].groupby(POSTING_ID).groups
        examples = "; ".join(
            f"{pid!r} on {_unit(path)}s {', '.join(str(df[LINE][i]) for i in idx)}"
            for pid, idx in list(groups.items())[:_EXAMPLES]
        )
        raise ShopeeDataError(
            f"{path}: {len(groups)} posting_id(s) occur more than once ({examples}). "
            "Matches are reported per posting_id, so ids must be unique: drop or rename "
            "the repeated rows."
        )


def _check_labels(df: pd.DataFrame, path: Path) -> None:
    labels = _filled(df, LABEL_GROUP, path, "Fix those rows or remove the label_group column "
                     "to treat the file as unlabelled.")
    df[LABEL_GROUP] = parse_labels(labels)


def _check_sources(df: pd.DataFrame, path: Path) -> None:
    sources = _filled(df, SOURCE, path, "Every listing needs the shop or feed it comes from; "
                      "fill those rows, or drop the source column to match the file as one "
                      "catalog.")
    if sources.nunique() < 2:
        raise ShopeeDataError(
            f"{path}: every listing has the source {sources.iloc[0]!r}, so there is nothing to "
            "link across. Drop the source column to dedupe it as one catalog, or give two "
            "catalogs (`shopee-match link A.csv B.csv`).")
    df[SOURCE] = sources


def _filled(df: pd.DataFrame, column: str, path: Path, what_to_do: str) -> pd.Series:
    """A column's values stripped; an empty one is an error naming its lines."""
    values = df[column].str.strip()
    bad = df.index[values == ""]
    if len(bad):
        lines = ", ".join(str(df[LINE][i]) for i in bad[:_EXAMPLES])
        raise ShopeeDataError(f"{path}: {column} is empty on {len(bad)} {_unit(path)}(s) "
                              f"(e.g. {lines}). {what_to_do}")
    return values


def require_duplicates(postings: pd.DataFrame, source: str = "this dataset") -> None:
    """Stop with one clear message when labelled postings cannot teach or measure matching:
    no label_group, no two listings sharing one, or every listing in one group."""
    if LABEL_GROUP not in postings:
        raise ShopeeDataError(f"{source} has no label_group column: it is unlabelled. Match it "
                              "with a saved candidate (`shopee-match submit` / `dedupe`).")
    sizes = postings[LABEL_GROUP].value_counts()
    if (sizes < 2).all():
        raise ShopeeDataError(
            f"{source}: no two of its {len(postings)} listings share a label_group, so there "
            "are no duplicates to learn from or to measure. Label some duplicates, or cluster "
            "the catalog with `shopee-match dedupe` and a candidate made on labelled data.")
    if len(sizes) < 2:
        raise ShopeeDataError(
            f"{source}: all {len(postings)} listings share one label_group, so there are no "
            "different-product pairs to learn from or to measure. Label more products.")


def parse_labels(labels) -> np.ndarray:
    """Group labels exactly as written: int64 when every one is a canonical integer that fits
    (Shopee's), else the text itself (so ``1.2`` and ``1.7`` stay two groups)."""
    text = [str(v) for v in labels]
    if all(_CANONICAL_INT.fullmatch(t) for t in text):
        values = [int(t) for t in text]
        if all(-(2**63) <= v < 2**63 for v in values):
            return np.asarray(values, dtype=np.int64)
    return np.asarray(text, dtype=object)


def _clean_titles(df: pd.DataFrame, report: ValidationReport) -> None:
    df[TITLE_RAW] = df[TITLE]
    cleaned = [clean_title(t) for t in df[TITLE]]
    df[TITLE] = cleaned
    df[TITLE_OK] = [bool(t) for t in cleaned]
    for line, pid, raw, new in zip(df[LINE], df[POSTING_ID], df[TITLE_RAW], cleaned):
        if not new:
            report.empty_titles.append((line, pid))
        elif isinstance(raw, str) and " ".join(raw.split()) != new:
            report.repaired_titles.append((line, pid, raw, new))


def _check_images(
    df: pd.DataFrame, folder: Path | str, how: str, report: ValidationReport, progress: bool,
    allow_outside: bool = False,
) -> None:
    from PIL import Image

    from shopee_match.progress import progress_bar

    names = df[IMAGE].fillna("").astype(str).str.strip()
    if isinstance(folder, str):  # in object storage: each name becomes its photo's URL
        beside = (names != "") & ~names.str.contains("://", regex=False)
        names = names.where(~beside, folder + "/" + names)
        folder = Path(folder)  # not opened: every photo is a URL now
    remote = names.str.contains("://", regex=False).to_numpy()
    if not remote[names != ""].all() and not folder.is_dir():
        raise ShopeeDataError(
            f"Images folder {folder} not found but the CSV has an image column. Put the "
            "images there, or drop the image column to use the titles only."
        )
    paths = [name if far else str(folder / name) if name else ""
             for name, far in zip(names, remote)]
    inside = folder.resolve()
    ok = np.zeros(len(df), dtype=bool)
    rows = progress_bar(enumerate(zip(df[POSTING_ID], paths, df[LINE])), total=len(df),
                        desc="checking images",  # not for photos that are all URLs
                        disable=not progress or how == "none" or remote.all(),
                        leave=False)
    for i, (pid, path, line) in rows:
        if remote[i]:  # object storage (s3://, gs://, ...): read, and counted, when embedded
            ok[i] = True
            continue
        try:
            outside = (path and not allow_outside
                       and not Path(path).resolve().is_relative_to(inside))
        except (RuntimeError, OSError) as err:  # a symlink loop: one bad photo, flagged
            report.unreadable_images.append((line, pid, path, f"cannot be resolved: {err}"))
            paths[i] = ""
            continue
        if outside:
            report.outside_images.append((line, pid, names[i]))
            paths[i] = ""
            continue
        if how == "none":
            ok[i] = bool(path)
            continue
        if not path or not Path(path).is_file():
            report.missing_images.append((line, pid, path or "<no file name>"))
            continue
        if how in ("header", "decode"):
            try:
                with Image.open(path) as im:
                    kind = im.format
                    im.verify() if how == "header" else im.load()
                if how == "header" and _truncated(path, kind):
                    raise OSError("truncated file")
            except Exception as err:  # PIL raises many types for bad files
                reason = str(err) if isinstance(err, OSError) else type(err).__name__
                report.unreadable_images.append((line, pid, path, reason))
                continue
        ok[i] = True
    df[IMAGE_PATH] = paths
    df[IMAGE_OK] = ok


def _truncated(path: str, kind: str | None) -> bool:
    """A JPEG without its end marker or a PNG without its end chunk (cut off in transfer):
    the header check passes, but the pixels cannot all be decoded."""
    marker = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}.get(kind or "")
    if marker is None:
        return False
    with open(path, "rb") as f:
        f.seek(max(0, Path(path).stat().st_size - 4096))
        return marker not in f.read()


def write_test_layout(postings: pd.DataFrame, dest: str | Path) -> Path:
    """Write labelled postings as a Kaggle-style test set: ``test.csv`` without
    ``label_group``, ``test_images/`` (hard links, or copies), and ``solution.csv``
    (``posting_id,matches``) to score a submission. Returns ``dest``; idempotent.
    """
    import os
    import shutil

    from shopee_match.data.splits import ground_truth

    dest = Path(dest)
    images = dest / "test_images"
    images.mkdir(parents=True, exist_ok=True)
    columns = [c for c in (POSTING_ID, IMAGE, IMAGE_PHASH, TITLE, SOURCE) if c in postings]
    table = postings[columns].copy()
    table[TITLE] = postings[TITLE_RAW] if TITLE_RAW in postings else postings[TITLE]
    if IMAGE in postings:
        for name, source in zip(postings[IMAGE], postings[IMAGE_PATH]):
            target = images / name
            if source and Path(source).is_file() and not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
    truth = ground_truth(postings)
    solution = pd.DataFrame({POSTING_ID: truth.index,
                             "matches": [" ".join(sorted(s)) for s in truth]})
    table.to_csv(dest / "test.csv", index=False)
    solution.to_csv(dest / "solution.csv", index=False)
    return dest
