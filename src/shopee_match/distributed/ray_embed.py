"""Embedding on Ray: encoder actors embed blocks of listings, each block lands in a Parquet
shard, and a rerun skips what is written.

The listings still to embed (posting id + title or photo path) go through a Ray Data
``map_batches`` stage of :class:`EncodeBatches` actors (``compute=ActorPoolStrategy``,
``num_gpus`` per actor on GPU workers): each actor builds the kit's own encoder once
(:func:`~shopee_match.embed.encoders.make_encoder`: onnxruntime on CPU workers, torch + CUDA
on GPU workers, missing or unreadable photos as zero rows marked not ok, as locally). Each
embedded batch streams back to the driver, which writes it as one Parquet shard
(``posting_id``, ``ok``, ``vector``) renamed into place whole, so workers need no shared
disk, only the photos. Listings whose ids are in a written shard are not embedded again: a
rerun after the driver died resumes. Ray restarts a killed actor and retries its batch. The
shards folder sits beside the cache entry and is keyed like it (model, data, parameters).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np

SHARD_GLOB = "part-*.parquet"
META_FILE = "meta.json"


class EncodeBatches:
    """A Ray Data actor: one encoder, built once, embedding batch after batch of listings."""

    def __init__(self, encoder: dict, threads: int = 1):
        import torch

        from shopee_match.embed.backbones import pick_device
        from shopee_match.embed.encoders import make_encoder

        device = pick_device()
        if device == "cpu":
            torch.set_num_threads(threads)
        self.encoder = make_encoder(**encoder, device=device,
                                    threads=threads if device == "cpu" else 0)

    def __call__(self, batch: dict) -> dict:
        vectors, ok = self.encoder.encode([str(x) for x in batch["item"]])
        return {"posting_id": batch["posting_id"], "vector": vectors, "ok": ok}


def write_shard(folder: Path, ids: list[str], vectors: np.ndarray, ok: np.ndarray) -> Path:
    """One shard: written beside its place, then renamed into it (never read half-written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    table = pa.table({"posting_id": pa.array(ids, pa.string()), "ok": pa.array(ok, pa.bool_()),
                      "vector": pa.FixedSizeListArray.from_arrays(
                          pa.array(vectors.ravel(), pa.float32()), vectors.shape[1])})
    name = f"part-{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    tmp.rename(folder / name)
    return folder / name


def read_shards(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(ids, vectors, ok)`` of every shard written in ``folder`` (any order)."""
    import pyarrow.parquet as pq

    ids, vectors, ok = [], [], []
    for path in sorted(folder.glob(SHARD_GLOB)):
        table = pq.read_table(path)
        column = table.column("vector").combine_chunks()
        width = column.type.list_size
        ids += table.column("posting_id").to_pylist()
        vectors.append(column.flatten().to_numpy().reshape(-1, width))
        ok.append(table.column("ok").to_numpy(zero_copy_only=False))
    if not vectors:
        return [], np.zeros((0, 0), np.float32), np.zeros(0, bool)
    return ids, np.concatenate(vectors), np.concatenate(ok)


def shard_ids(path: Path) -> list[str]:
    """The posting ids of one shard (its vectors are not read)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["posting_id"]).column("posting_id").to_pylist()


def open_shards(folder: Path, meta: dict) -> list[str]:
    """The ids already embedded in ``folder`` for ``meta``; a folder made for anything else
    (another model, data or parameters) is emptied first."""
    stored = folder / META_FILE
    if stored.is_file() and json.loads(stored.read_text()) == meta:
        return [i for path in sorted(folder.glob(SHARD_GLOB)) for i in shard_ids(path)]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    stored.write_text(json.dumps(meta, sort_keys=True))
    return []


def embed_on_ray(executor, ids: list[str], items: list[str], encoder: dict, folder: Path,
                 meta: dict, desc: str = "embedding on Ray") -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, ok)`` of ``items`` in ``ids`` order, embedded by ``executor``'s actors
    into shards under ``folder`` (those already there for ``meta`` are reused).
    ``encoder``: :func:`~shopee_match.embed.encoders.make_encoder`'s arguments."""
    import pandas as pd
    import ray.data

    from shopee_match.distributed.runtime import in_blocks
    from shopee_match.progress import progress_bar

    folder = Path(folder)
    done = set(open_shards(folder, meta))
    todo = [r for r, i in enumerate(ids) if i not in done]
    if todo:
        frame = pd.DataFrame({"posting_id": [ids[r] for r in todo],
                              "item": [items[r] for r in todo]})
        data = ray.data.from_pandas(in_blocks(frame, executor.shard_rows)).map_batches(
            EncodeBatches, batch_size=executor.shard_rows, batch_format="numpy",
            fn_constructor_kwargs={"encoder": encoder, "threads": executor.threads()},
            **executor.actor_options())
        with progress_bar(total=len(todo), desc=desc, disable=not executor.progress,
                          leave=False) as bar:
            for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
                write_shard(folder, [str(i) for i in batch["posting_id"]], batch["vector"],
                            batch["ok"])
                bar.update(len(batch["posting_id"]))
    written, vectors, ok = read_shards(folder)
    row = {pid: r for r, pid in enumerate(written)}
    missing = [i for i in ids if i not in row]
    if missing:
        raise RuntimeError(f"{len(missing)} listings (e.g. {missing[:3]}) have no shard in "
                           f"{folder} after the Ray run; run again to embed them")
    order = np.array([row[i] for i in ids], dtype=np.int64)
    return vectors[order], ok[order]
