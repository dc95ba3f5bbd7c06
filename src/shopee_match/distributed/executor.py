"""One switch for the heavy steps: :class:`RayExecutor` runs them on a Ray cluster.

``submit``, ``dedupe`` and ``link`` take ``--ray ADDRESS`` and the notebooks that embed take
``EXECUTOR = "ray"``; both make a :class:`RayExecutor` and hand it down the same apply
pipeline as the local path, which stays the default. With it:

- a Parquet catalog in object storage is read in blocks by Ray Data's reader
  (:mod:`shopee_match.distributed.ray_read`), then checked on the driver as locally;
- photos and titles are embedded by actors of a Ray Data ``map_batches`` stage, each
  writing Parquet shards (ids beside vectors) that a rerun skips
  (:mod:`shopee_match.distributed.ray_embed`); the shards become the kit's embedding cache
  entry, so everything after reads the vectors it would have computed itself;
- the self-search runs as Ray tasks over blocks of queries against vectors put in the
  object store once (:mod:`shopee_match.distributed.ray_search`);
- candidate pairs are scored by the candidate's second stage in actors
  (:mod:`shopee_match.distributed.ray_score`);
- clustering (connected components of the accepted pairs) stays on the driver.

Ray retries what a killed worker was doing (actors restart, tasks are retried), so a lost
worker costs time, not the run. ``address`` is Ray's own: ``auto`` joins a running cluster
(``ray start --head``), ``local`` starts one for the run, ``ray://host:10001`` connects a
client. Ray is an optional dependency (``pip install 'ray[data]'``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from shopee_match.distributed.runtime import import_ray

#: executors a notebook's ``EXECUTOR`` parameter may name
EXECUTORS = ("local", "ray")


@dataclass
class RayExecutor:
    """Where and how wide the heavy steps run on Ray.

    ``actors``: encoder / scorer actors (default: one per ``cpus_per_actor`` CPUs of the
    cluster, or one per GPU with ``gpus_per_actor``); ``shard_rows``: listings per embedded
    shard (the unit of resumption); ``query_rows``: queries per search task;
    ``score_rows``: candidate pairs per scoring call.
    """

    address: str = "auto"
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    shard_rows: int = 1024
    query_rows: int = 4096
    score_rows: int = 8192
    progress: bool = True
    _started: bool = field(default=False, init=False, repr=False)  # start() connected Ray

    def start(self) -> RayExecutor:
        """Connect to (or start) Ray unless this process is already connected; quiet Ray
        Data's own progress bars and log lines (the kit draws one bar per step)."""
        ray = import_ray()
        if not ray.is_initialized():
            options = {"num_cpus": os.cpu_count()} if self.address == "local" else {}
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, **options)
            except ConnectionError as err:
                raise ConnectionError(
                    f"no Ray cluster at {self.address!r} ({err}). Start one with 'ray start "
                    "--head' (README, On a cluster), give its address, or use --ray local "
                    "(EXECUTOR = 'ray' with RAY_ADDRESS = 'local') for a Ray on this machine."
                ) from err
            self._started = True
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per stage otherwise
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the kit draws its own, one per step
        context.print_on_execution_start = False
        return self

    def close(self) -> None:
        """Disconnect, if :meth:`start` connected (a cluster the caller joined stays up)."""
        if self._started:
            import_ray().shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def pool_size(self) -> int:
        """Actors per stage: :attr:`actors`, else what the cluster's CPUs (GPUs) hold."""
        if self.actors:
            return int(self.actors)
        resources = import_ray().cluster_resources()
        if self.gpus_per_actor:
            return max(1, int(resources.get("GPU", 0) // self.gpus_per_actor))
        return max(1, int(resources.get("CPU", 1) // max(self.cpus_per_actor, 1e-9)))

    def actor_options(self) -> dict:
        """``map_batches`` arguments that place and size this executor's actors."""
        import ray.data

        return {"compute": ray.data.ActorPoolStrategy(min_size=1, max_size=self.pool_size()),
                "num_cpus": self.cpus_per_actor, "num_gpus": self.gpus_per_actor}

    def threads(self) -> int:
        """Intra-op threads of one CPU actor's model (its share of a node's cores)."""
        return max(1, int(self.cpus_per_actor))

    # what the layers below call, without importing Ray or this package

    def read_rows(self, path):
        """A catalog's records as text, a Parquet file in object storage read in blocks by
        Ray Data (:func:`~shopee_match.distributed.ray_read.read_rows_on_ray`)."""
        from shopee_match.distributed.ray_read import read_rows_on_ray

        self.start()  # connected (if not yet), Ray Data's own bars and logs quiet
        return read_rows_on_ray(path)

    def embed(self, ids: list[str], items: list[str], encoder: dict, folder, meta: dict,
              desc: str = "embedding on Ray"):
        """``(vectors, ok)`` of ``items`` embedded by encoder actors, through shards in
        ``folder`` (:func:`~shopee_match.distributed.ray_embed.embed_on_ray`)."""
        from shopee_match.distributed.ray_embed import embed_on_ray

        self.start()  # connected (if not yet), Ray Data's own bars and logs quiet
        return embed_on_ray(self, ids, items, encoder, folder, meta, desc)

    def self_knn(self, vectors, k: int, recall: float):
        """Self-search lists ``(sims, idx)`` searched by Ray tasks
        (:func:`~shopee_match.distributed.ray_search.ray_self_knn`)."""
        from shopee_match.distributed.ray_search import ray_self_knn

        self.start()  # connected (if not yet), Ray Data's own bars and logs quiet
        return ray_self_knn(self, vectors, k, recall)

    def scorer(self, kind: str, path, local):
        """The second stage of ``kind`` saved at ``path`` (``local``: loaded here), scoring
        on Ray (:class:`~shopee_match.distributed.ray_score.RayScorer`)."""
        from shopee_match.distributed.ray_score import RayScorer

        self.start()  # connected (if not yet), Ray Data's own bars and logs quiet
        return RayScorer(self, kind, path, local)


def make_executor(name: str | None, address: str = "auto", **options) -> RayExecutor | None:
    """The executor a notebook's ``EXECUTOR`` names: None for ``local`` (the default path),
    a started :class:`RayExecutor` on ``address`` for ``ray``."""
    if name in (None, "", "local"):
        return None
    if name != "ray":
        raise ValueError(f"EXECUTOR must be one of {EXECUTORS}, got {name!r}")
    return RayExecutor(address, **options).start()
