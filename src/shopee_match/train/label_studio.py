"""Label pairs outside Jupyter: a Label Studio task file out, its annotations back in.

:func:`export_tasks` writes a review queue as Label Studio tasks (two photos, two titles,
the ids and the scores) with the labelling configuration beside it
(:data:`LABEL_CONFIG`: a pairwise view, one choice Same product / Different / Skip).
Photos are referenced through Label Studio's local-file serving
(``/data/local-files/?d=<path under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>``).
:func:`import_annotations` reads Label Studio's JSON export and appends each task's latest
answer to the labels file, as the notebook widget would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from shopee_match.train.labels import LabelLog, shown_scores

#: Label Studio's labelling interface for a pair (paste it in the project's settings)
LABEL_CONFIG = """<View>
  <Header value="Same product?"/>
  <View style="display: flex; gap: 1em">
    <View style="flex: 50%">
      <Image name="image_1" value="$image_1" maxWidth="320px"/>
      <Text name="title_1" value="$title_1"/>
    </View>
    <View style="flex: 50%">
      <Image name="image_2" value="$image_2" maxWidth="320px"/>
      <Text name="title_2" value="$title_2"/>
    </View>
  </View>
  <Choices name="match" toName="title_1" choice="single" showInline="true" required="true">
    <Choice value="Same product" hotkey="s"/>
    <Choice value="Different" hotkey="d"/>
    <Choice value="Skip" hotkey="k"/>
  </Choices>
</View>
"""
#: Label Studio's choice -> the labels file's answer
CHOICES = {"Same product": "same", "Different": "different", "Skip": "skip"}


def export_tasks(queue: pd.DataFrame, path: str | Path, document_root: str | Path | None = None,
                 candidate: str = "") -> tuple[Path, Path]:
    """Write ``queue`` (ids, titles, optional ``image_1``/``image_2`` paths and scores) as a
    Label Studio task file at ``path`` and ``label_config.xml`` beside it. Photo paths are
    made relative to ``document_root`` (what Label Studio's
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` must be; default: the deepest folder holding
    every photo). Returns the task file and the document root."""
    import os

    from shopee_match.files import atomic_write

    path = Path(path)
    photos = [str(Path(p).resolve().parent) for col in ("image_1", "image_2") if col in queue
              for p in queue[col] if isinstance(p, str) and p]
    root = Path(document_root) if document_root else Path(
        os.path.commonpath(photos) if photos else "/")

    def url(value) -> str:
        if not isinstance(value, str) or not value:
            return ""
        try:
            relative = Path(value).resolve().relative_to(root.resolve())
        except ValueError as err:
            raise ValueError(f"photo {value} is not under the document root {root}; pass "
                             "document_root= the folder Label Studio serves") from err
        return f"/data/local-files/?d={relative.as_posix()}"

    tasks = []
    for row in queue.to_dict("records"):
        tasks.append({"data": {
            "posting_id_1": str(row["posting_id_1"]), "posting_id_2": str(row["posting_id_2"]),
            "title_1": str(row["title_1"]), "title_2": str(row["title_2"]),
            "image_1": url(row.get("image_1")), "image_2": url(row.get("image_2")),
            "queue": str(row.get("queue", "")), "candidate": candidate,
            "scores": shown_scores(row)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(tasks, f, ensure_ascii=False, indent=1)
    (path.parent / "label_config.xml").write_text(LABEL_CONFIG)
    return path, root


def import_annotations(path: str | Path, log: LabelLog) -> dict[str, int]:
    """Append the answer of every annotated task of a Label Studio JSON export to ``log``
    (the latest annotation of a task that was not cancelled); tasks without one are counted
    as ``unanswered``. A task that is not one of :func:`export_tasks`' (no ids) or a choice
    the configuration does not have is an error naming the task."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a Label Studio JSON export ({err})") from err
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio JSON export is a list of tasks")
    answers, unanswered = [], 0
    for number, task in enumerate(tasks, start=1):
        where = f"{path}: task {number} (id {task.get('id', '?')})"
        data = task.get("data", {})
        if not data.get("posting_id_1") or not data.get("posting_id_2"):
            raise ValueError(f"{where} has no posting_id_1/posting_id_2: export tasks with "
                             "shopee-match's export_tasks and import that project's export")
        done = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        choices = [c for a in done[-1:] for r in a.get("result", [])
                   for c in r.get("value", {}).get("choices", [])]
        if not choices:
            unanswered += 1
            continue
        if choices[-1] not in CHOICES:
            raise ValueError(f"{where}: choice {choices[-1]!r} is not one of {list(CHOICES)}")
        answers.append((data, CHOICES[choices[-1]]))
    for data, label in answers:  # only once every task was checked: all or nothing
        log.answer(data["posting_id_1"], data["posting_id_2"], label,
                   queue=f"label-studio:{data.get('queue', '')}",
                   candidate=data.get("candidate", ""), title_1=data.get("title_1", ""),
                   title_2=data.get("title_2", ""), scores=data.get("scores") or {})
    return {"imported": len(answers), "unanswered": unanswered}
