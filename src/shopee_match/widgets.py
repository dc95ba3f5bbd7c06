"""The pair labeller: an ipywidgets panel to answer, pair by pair, "same product or not?".

It shows both photos side by side, both titles (coloured by the cross-encoder's token
attributions when an ``explain`` function is given), every stage's score and the candidate's
verdict, with buttons **Same / Different / Skip / Undo** and the same as keys (type
``s``, ``d``, ``k`` or ``u`` in the key box), live counts and a progress bar. Every click goes
straight to the labels file (:class:`~shopee_match.train.labels.LabelLog`), so a kernel
restart resumes at the first pair of the queue not yet answered. Works wherever ipywidgets
does (JupyterLab, Colab, VS Code): only core widgets are used.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from shopee_match.train.labels import (
    SCORE_COLUMNS,
    LabelLog,
    label_counts,
    pair_key,
    shown_scores,
)

#: key typed in the key box -> what it does
KEYS = {"s": "same", "d": "different", "k": "skip", "u": "undo"}
#: how the score columns of a queue are named under the pair
SCORE_NAMES = dict(zip(SCORE_COLUMNS, ("bi-encoder similarity", "cross-encoder",
                                       "candidate's score")))


class PairLabeller:
    """Label the pairs of ``queue`` in order (columns ``posting_id_1``, ``posting_id_2``,
    ``title_1``, ``title_2``; optional ``image_1``/``image_2`` paths, the scores of
    :data:`SCORE_NAMES`, ``accepted`` and ``queue``), writing each answer to ``log``.

    ``candidate`` names the candidate whose scores are shown (written with each label);
    ``explain(title_1, title_2)`` may return token attributions (the cross-encoder's
    ``token_attributions``). Display it with ``display(labeller.widget)``.
    """

    def __init__(self, queue: pd.DataFrame, log: LabelLog, candidate: str = "",
                 explain: Callable[[str, str], list] | None = None, thumbnail: int = 224):
        missing = {"posting_id_1", "posting_id_2", "title_1", "title_2"} - set(queue.columns)
        if missing:
            raise ValueError(f"the queue lacks column(s) {sorted(missing)}")
        self.queue = queue.reset_index(drop=True)
        self.log, self.candidate, self.explain = log, candidate, explain
        self.thumbnail = thumbnail
        self.keys = [pair_key(a, b) for a, b in zip(self.queue["posting_id_1"],
                                                    self.queue["posting_id_2"])]
        self.position = self._next_open(0)
        self.drawing = True
        self._build()
        self.show()

    # --- what a click does (also what tests and the oracle call) ---------------------------
    def answer(self, label: str) -> None:
        """Write ``label`` (``same``, ``different`` or ``skip``) for the pair on screen and
        move to the next pair not yet answered."""
        if self.position is None:
            return
        row = self.queue.iloc[self.position]
        self.log.answer(row["posting_id_1"], row["posting_id_2"], label,
                        queue=str(row.get("queue", "")), candidate=self.candidate,
                        title_1=row["title_1"], title_2=row["title_2"],
                        scores=shown_scores(row))
        self.position = self._next_open(self.position + 1)
        self.show()

    def undo(self) -> None:
        """Withdraw the latest answer (written to the file as an ``undo``; also one of an
        earlier session) and show its pair again when it is in this queue."""
        key = self.log.undo()
        if key in self.keys:
            self.position = self.keys.index(key)
        self.show()

    @contextmanager
    def batch(self):
        """Answer many pairs from code (an oracle, a script) without drawing each one; the
        panel is drawn once at the end."""
        self.drawing = False
        try:
            yield self
        finally:
            self.drawing = True
            self.show()

    def counts(self) -> dict[str, int]:
        """Labelled, same, different, skipped and remaining pairs of this queue."""
        answers = self.log.current()
        mine = answers[answers["key"].isin(set(self.keys))]
        return label_counts(mine, len(self.queue))

    def current(self) -> pd.Series | None:
        """The pair on screen (None when the queue is done)."""
        return None if self.position is None else self.queue.iloc[self.position]

    def _next_open(self, start: int) -> int | None:
        answered = set(self.log.current()["key"])
        for position in range(start, len(self.queue)):
            if self.keys[position] not in answered:
                return position
        for position in range(0, start):  # pairs skipped over by an undo further back
            if self.keys[position] not in answered:
                return position
        return None

    # --- the widgets ----------------------------------------------------------------------
    def _build(self) -> None:
        import ipywidgets as w

        self.pair_view = w.HTML()
        self.status = w.HTML()
        self.progress = w.IntProgress(min=0, max=max(len(self.queue), 1),
                                      description="answered", bar_style="info")
        self.buttons = {}
        for label, style, key in (("same", "success", "s"), ("different", "danger", "d"),
                                  ("skip", "", "k"), ("undo", "warning", "u")):
            button = w.Button(description=f"{label.capitalize()} ({key})", button_style=style,
                              tooltip=f"{label} (key {key})")
            button.on_click(lambda _, label=label: self._act(label))
            self.buttons[label] = button
        self.key_box = w.Text(placeholder="keys: s d k u", continuous_update=True,
                              layout=w.Layout(width="130px"))
        self.key_box.observe(self._on_key, names="value")
        self.widget = w.VBox([self.pair_view,
                              w.HBox([*self.buttons.values(), self.key_box]),
                              w.HBox([self.progress, self.status])])

    def _act(self, label: str) -> None:
        self.undo() if label == "undo" else self.answer(label)

    def _on_key(self, change) -> None:
        typed = change["new"]
        if not typed:
            return
        self.key_box.value = ""
        action = KEYS.get(typed[-1].lower())
        if action:
            self._act(action)

    def show(self) -> None:
        """Redraw the pair, the counts and the progress bar."""
        if not self.drawing:
            return
        counts = self.counts()
        self.progress.value = len(self.queue) - counts["remaining"]
        self.status.value = (f"labelled <b>{counts['labelled']}</b> · same {counts['same']} · "
                             f"different {counts['different']} · skipped {counts['skipped']} · "
                             f"remaining <b>{counts['remaining']}</b>")
        row = self.current()
        self.pair_view.value = (f"<p>All {len(self.queue)} pairs of this queue are answered."
                                "</p>" if row is None else self.pair_html(row))

    def pair_html(self, row: pd.Series) -> str:
        """One pair as HTML: photos side by side, titles (with attributions), scores and the
        candidate's verdict."""
        titles = [html.escape(str(row["title_1"])), html.escape(str(row["title_2"]))]
        if self.explain is not None:
            from shopee_match.plots import attribution_html

            tokens = self.explain(str(row["title_1"]), str(row["title_2"]))
            titles = [attribution_html(part) for part in split_at_separator(tokens)]
        cells = []
        for side in (1, 2):
            photo = _thumbnail_html(row.get(f"image_{side}"), self.thumbnail)
            posting = html.escape(str(row[f"posting_id_{side}"]))
            cells.append(f"<td style='vertical-align:top;width:50%;padding:6px'>{photo}"
                         f"<div style='margin-top:6px'>{titles[side - 1]}</div>"
                         f"<div style='color:#777;font-size:85%'>{posting}</div></td>")
        scores = " · ".join(f"{name} {row[k]:.3f}" for k, name in SCORE_NAMES.items()
                            if k in row and pd.notna(row[k]))
        verdict = ("" if "accepted" not in row else
                   f" · candidate says <b>{'same' if row['accepted'] else 'different'}</b>")
        place = ("" if self.position is None else
                 f"pair {self.position + 1} of {len(self.queue)}")
        return (f"<div style='font-family:sans-serif'><div style='color:#555'>{place} · queue "
                f"{html.escape(str(row.get('queue', '')))}</div><table style='width:100%'><tr>"
                f"{''.join(cells)}</tr></table><div>{scores}{verdict}</div></div>")


def split_at_separator(tokens: list[tuple[str, float]]) -> list[list[tuple[str, float]]]:
    """A cross-encoder's token attributions of ``[CLS] title 1 [SEP] title 2 [SEP]`` as the
    tokens of each title."""
    parts: list[list] = [[]]
    for token, score in tokens:
        if token in ("[CLS]", "<s>"):
            continue
        if token in ("[SEP]", "</s>"):
            if parts[-1]:
                parts.append([])
            continue
        parts[-1].append((token, score))
    parts = [p for p in parts if p]
    return (parts + [[], []])[:2]


def _thumbnail_html(path, side: int) -> str:
    """An inline ``<img>`` of the photo at ``path`` (at most ``side`` px), or a note when
    there is none or it cannot be read."""
    if path is None or (isinstance(path, float)) or not str(path).strip():
        return "<div style='color:#999'>no photo</div>"
    from PIL import Image

    try:
        with Image.open(Path(path)) as image:
            image = image.convert("RGB")
            image.thumbnail((side, side))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError) as err:
        return (f"<div style='color:#b00'>photo cannot be read: {html.escape(str(path))} "
                f"({html.escape(type(err).__name__)})</div>")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img src='data:image/jpeg;base64,{data}' style='max-width:100%'>"
