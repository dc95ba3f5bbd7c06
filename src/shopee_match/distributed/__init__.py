"""Past one machine: the kit's heavy steps (embedding, neighbour search, second-stage
scoring) on a Ray cluster, with the same results as the local path
(:class:`~shopee_match.distributed.executor.RayExecutor`)."""
