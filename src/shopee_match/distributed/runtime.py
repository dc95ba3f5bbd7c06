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


def in_blocks(frame, rows: int) -> list:
    """``frame`` cut into consecutive parts of at most ``rows`` rows (Ray Data blocks)."""
    return [frame.iloc[lo:lo + rows] for lo in range(0, len(frame), rows)]
