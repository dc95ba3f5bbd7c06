"""Matplotlib figures used by the notebooks."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd


def drawable(text: str) -> str:
    """``text`` without the characters (emoji, CJK brackets…) matplotlib's font cannot draw."""
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))
    kept = "".join(ch for ch in text if ch.isspace() or font.get_char_index(ord(ch)))
    return " ".join(kept.split())


def group_size_hist(postings: pd.DataFrame, ax=None):
    """Bar chart: number of label groups of each size (log scale)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    counts = postings["label_group"].value_counts().value_counts().sort_index()
    ax.bar(counts.index, counts.to_numpy(), color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel("listings in the group")
    ax.set_ylabel("groups (log)")
    ax.set_title(f"Group sizes: {postings['label_group'].nunique()} groups, "
                 f"{len(postings)} listings")
    return ax


def distribution(values: pd.Series, title: str, xlabel: str, ax=None, bins=40):
    """Histogram with mean and median marked (``bins``: a count or the bin edges)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    ax.hist(values, bins=bins, color="#55a868", alpha=0.85)
    for stat, style in ((values.mean(), "-"), (values.median(), "--")):
        ax.axvline(stat, color="k", linestyle=style, linewidth=1)
    ax.set_title(f"{title} (mean {values.mean():.1f}, median {values.median():.0f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("listings")
    return ax


def group_gallery(postings: pd.DataFrame, groups: list, per_group: int = 5, thumb: float = 2.0):
    """One row per label group: its listings' photos with their titles underneath.

    Rows without a readable image show a grey tile saying so.
    """
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(groups), per_group, figsize=(thumb * per_group,
                             (thumb + 0.9) * len(groups)), squeeze=False)
    for row, label in zip(axes, groups):
        members = postings[postings["label_group"] == label].head(per_group)
        for ax, item in zip(row, list(members.itertuples()) + [None] * per_group):
            ax.set_axis_off()
            if item is None:
                continue
            if getattr(item, "image_ok", False):
                with Image.open(item.image_path) as im:
                    ax.imshow(np.asarray(im.convert("RGB")))
            else:
                ax.imshow(np.full((8, 8, 3), 0.85))
                ax.text(4, 4, "no image", ha="center", va="center", fontsize=8)
            title = drawable(item.title)
            ax.set_title("\n".join(textwrap.wrap(title, 28)[:3]), fontsize=7)
        row[0].text(-0.1, 0.5, f"group {label}", transform=row[0].transAxes, rotation=90,
                    va="center", ha="right", fontsize=8)
    fig.tight_layout()
    return fig
