"""Figures used by the notebooks: matplotlib plots, and coloured HTML of token attributions."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from shopee_match.data.schema import IMAGE_OK, IMAGE_PATH, LABEL_GROUP, TITLE


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
    counts = postings[LABEL_GROUP].value_counts().value_counts().sort_index()
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

    fig, axes = plt.subplots(len(groups), per_group, figsize=(thumb * per_group,
                             (thumb + 0.9) * len(groups)), squeeze=False)
    for row, label in zip(axes, groups):
        members = postings[postings[LABEL_GROUP] == label].head(per_group)
        for ax in row:
            ax.set_axis_off()
        for ax, (_, item) in zip(row, members.iterrows()):
            _listing_tile(ax, item)
            ax.set_title("\n".join(textwrap.wrap(drawable(item[TITLE]), 28)[:3]), fontsize=7)
        row[0].text(-0.1, 0.5, f"group {label}", transform=row[0].transAxes, rotation=90,
                    va="center", ha="right", fontsize=8)
    fig.tight_layout()
    return fig


def _listing_tile(ax, item: pd.Series) -> None:
    """A listing's photo, or a grey tile saying "no image" when it has none readable."""
    from PIL import Image

    if item.get(IMAGE_OK, False):
        with Image.open(item[IMAGE_PATH]) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
    else:
        ax.imshow(np.full((8, 8, 3), 0.85))
        ax.text(3.5, 3.5, "no image", ha="center", va="center", fontsize=8)


def similarity_hist(sims: np.ndarray, is_match: np.ndarray, title: str, ax=None):
    """Overlaid densities of pair similarities: same product vs different products."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5, 3))[1]
    bins = np.linspace(min(0.0, float(sims.min())), 1.0, 50)
    ax.hist(sims[~is_match], bins=bins, density=True, alpha=0.6, color="#c44e52",
            label=f"different ({(~is_match).sum():,} pairs)")
    ax.hist(sims[is_match], bins=bins, density=True, alpha=0.6, color="#55a868",
            label=f"same product ({is_match.sum():,} pairs)")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("cosine similarity")
    ax.legend(fontsize=7)
    return ax


def neighbor_gallery(postings: pd.DataFrame, queries: list[int], sims: np.ndarray,
                     idx: np.ndarray, n_neighbors: int = 5, thumb: float = 1.9,
                     title: str | None = None):
    """Each query (left) with its nearest neighbours, framed green (same group) or red;
    ``title`` goes above the whole figure."""
    import matplotlib.pyplot as plt

    labels = postings[LABEL_GROUP].to_numpy() if LABEL_GROUP in postings else None
    fig, axes = plt.subplots(len(queries), n_neighbors + 1, squeeze=False,
                             figsize=(thumb * (n_neighbors + 1), (thumb + 0.8) * len(queries)))
    for row, q in zip(axes, queries):
        others = [(j, s) for j, s in zip(idx[q], sims[q]) if j != q and j >= 0][:n_neighbors]
        for col, (ax, (j, score)) in enumerate(zip(row, [(q, None), *others])):
            item = postings.iloc[j]
            _listing_tile(ax, item)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "#1f77b4" if col == 0 else (
                "#2ca02c" if labels is not None and labels[j] == labels[q] else "#d62728")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4)
            head = "query" if score is None else f"{score:.3f}"
            text = "\n".join(textwrap.wrap(drawable(item[TITLE]), 24)[:2])
            ax.set_title(f"{head}\n{text}", fontsize=7, color=colour)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    else:
        fig.tight_layout()
    return fig


def recall_curves(table: pd.DataFrame, metric: str = "recall", ax=None):
    """recall@K (or hit@K) against K, one line per ``modality`` in a long table."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for name, part in table.groupby("modality", sort=False):
        ax.plot(part["k"], part[metric], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_xticklabels(sorted(table["k"].unique()))
    ax.set_xlabel("K (neighbours, self excluded)")
    ax.set_ylabel(f"{metric}@K")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


METRIC_LABELS = {"row_f1": "mean row-wise F1", "pair_f1": "pair F1"}


def leaderboard_chart(board: pd.DataFrame, ax=None):
    """Horizontal bars of each candidate's val F1 and fair test F1 (the one used in bold).

    ``board`` has the columns of :func:`shopee_match.apply.candidates.leaderboard`
    (``candidate``, ``val F1``, ``test F1 (fair)``, ``usable``) and optionally ``used`` and
    ``metric``, which names the axis (row-wise or pair F1; "F1" when the rows mix them).
    """
    import matplotlib.pyplot as plt

    rows = board[board["val F1"].notna()].iloc[::-1]  # best at the top
    ax = ax or plt.subplots(figsize=(10, 1.4 + 0.6 * max(len(rows), 1)))[1]
    y = np.arange(len(rows))
    val = rows["val F1"].astype(float).to_numpy()
    test = rows["test F1 (fair)"].astype(float).to_numpy()
    ax.barh(y + 0.2, val, height=0.38, color="#4c72b0", label="val F1 (chooses)")
    ax.barh(y - 0.2, test, height=0.38, color="#dd8452", label="test F1 (fair, reported)")
    for yi, v, t in zip(y, val, test):
        ax.text(v, yi + 0.2, f" {v:.3f}", va="center", fontsize=8)
        ax.text(t, yi - 0.2, f" {t:.3f}", va="center", fontsize=8)
    used = rows["used"].to_numpy() if "used" in rows else np.zeros(len(rows), bool)
    labels = [f"{name}{'  ← submitted' if u else ''}{'' if ok else ' (not usable)'}"
              for name, u, ok in zip(rows["candidate"], used, rows["usable"])]
    ax.set_yticks(y, labels)
    for tick, u in zip(ax.get_yticklabels(), used):
        tick.set_fontweight("bold" if u else "normal")
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(metric_label(rows))
    ax.set_title("Candidates: chosen by val F1, reported by fair test F1")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.figure.tight_layout()
    return ax


def metric_label(rows: pd.DataFrame) -> str:
    """What the F1 figures of leaderboard ``rows`` are, from their ``metric`` column (a
    board without it, as older records have, is row-wise F1, the only metric then)."""
    metrics = set(rows["metric"].dropna()) - {""} if "metric" in rows else {"row_f1"}
    return METRIC_LABELS.get(metrics.pop(), "F1") if len(metrics) == 1 else "F1"


def attribution_html(tokens: list[tuple[str, float]]) -> str:
    """Words as coloured spans (word pieces joined, their scores averaged): green pushed the
    pair towards "same product", red away from it; the score shows on hover."""
    import html

    words: list[list] = []
    for token, score in tokens:
        if token.startswith("##") and words:
            words[-1][0] += token[2:]
            words[-1][1].append(score)
        else:
            words.append([token, [score]])
    spans = []
    for word, scores in words:
        score = float(np.mean(scores))
        colour = (f"rgba(44,160,44,{abs(score):.2f})" if score >= 0 else
                  f"rgba(214,39,40,{abs(score):.2f})")
        spans.append(f"<span style='background:{colour};padding:1px 3px;border-radius:3px' "
                     f"title='{score:+.2f}'>{html.escape(word)}</span>")
    return "<div style='line-height:2'>" + " ".join(spans) + "</div>"
