"""Reading a catalog on Ray: a Parquet file in object storage read in blocks by Ray Data.

A catalog at a URL (``s3://``, ``gs://``, or any path every node sees, as ``file://``) is read
by ``ray.data.read_parquet``, its blocks spread over the cluster; the rows come back to the
driver in file order and go through the same checks as a local read
(:func:`~shopee_match.data.postings.load_postings`): duplicate ids need every id at once, and
the clusters are made there. A file on the driver's own disk is read here, in blocks, by
pyarrow (the other nodes need not have it), and a CSV by the kit's own strict reader (line
numbers, field counts), which Ray's CSV reader cannot give.
"""

from __future__ import annotations

from pathlib import Path


def read_rows_on_ray(path: str | Path):
    """A catalog's records as text, plus ``line``
    (:func:`~shopee_match.data.postings.read_catalog_rows`): a Parquet file at a URL read in
    blocks by Ray Data, anything else here."""
    import ray.data

    from shopee_match.data.postings import is_parquet, read_catalog_rows, read_parquet_rows
    from shopee_match.files import is_url

    if not (is_url(path) and is_parquet(path)):
        return read_catalog_rows(path)
    options = ray.data.DataContext.get_current().execution_options
    ordered, options.preserve_order = options.preserve_order, True  # rows in file order
    try:
        data = ray.data.read_parquet(str(path))
        return read_parquet_rows(path, data.iter_batches(batch_size=None,
                                                         batch_format="pyarrow"))
    finally:
        options.preserve_order = ordered
