"""Ray itself, imported on demand, and the blocks a table is handed to Ray Data in."""

from __future__ import annotations


def import_ray():
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the stages are Ray Data pipelines)
    except ImportError as err:
        raise ImportError("the Ray executor needs Ray Data: pip install 'ray[data]' (or "
                          "'pip install -e .[ray]' in this repository)") from err
    return ray


def in_blocks(frame, blocks: int) -> list:
    """``frame`` cut into ``blocks`` consecutive parts (Ray Data blocks)."""
    bounds = [len(frame) * b // blocks for b in range(blocks + 1)]
    return [frame.iloc[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
