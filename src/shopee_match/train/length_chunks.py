"""Running a padded batch of token sequences through a model in chunks of similar length.

A tokenizer pads every sequence of a batch to its longest one, and a transformer spends its
time on padding tokens as on real ones (measured here: time grows with the padded length).
Titles vary in length, so a random training batch of them is mostly padding past its
median row. :func:`forward_by_length` sorts the batch's rows by length, runs each chunk of
``rows`` cut to its own longest sequence and puts the outputs back in the batch's order:
the same outputs (padding is masked, so cutting it changes nothing but rounding) and the
same gradients, from fewer tokens.
"""

from __future__ import annotations

from collections.abc import Callable


def forward_by_length(features: dict, run: Callable[[dict], object], rows: int):
    """``run(features)`` computed chunk by chunk: ``features`` (a tokenizer's batch with an
    ``attention_mask``, padded on the right) sorted by sequence length, cut into chunks of
    ``rows`` rows, each cut to its longest sequence. ``run`` maps features to a tensor with
    one row per sequence; the rows come back in ``features``' order. Batches padded on the
    left, and batches of at most ``rows`` rows, run whole."""
    import torch

    mask = features["attention_mask"]
    n, width = mask.shape
    lengths = mask.sum(dim=1)
    right_padded = torch.equal(mask.bool(), torch.arange(width, device=mask.device)[None, :]
                               < lengths[:, None])
    if n <= rows or not right_padded:
        return run(features)
    order = torch.argsort(lengths, stable=True)
    parts = []
    for chunk in torch.split(order, rows):
        cut = int(lengths[chunk].max())
        parts.append(run({name: value[chunk, :cut] if _per_token(value, n, width) else value
                          for name, value in features.items()}))
    return torch.cat(parts)[torch.argsort(order)]


def _per_token(value, n: int, width: int) -> bool:
    """Whether a feature holds one value per token of the batch (ids, masks, type ids)."""
    return hasattr(value, "shape") and tuple(value.shape[:2]) == (n, width)
