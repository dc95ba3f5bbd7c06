"""Candidates: every way to match that a notebook produced, saved with its scores.

A candidate is a folder ``artifacts/candidates/<name>/`` holding
``candidate.json`` (the :class:`~shopee_match.match.config.MatchConfig`, val F1,
fair test F1, the dataset fingerprint and split seed it was chosen on, when
and by which notebook) and the model files the configuration needs (the pair
classifier, fine-tuned encoders, cross-encoders). Encoder folders under
``artifacts/models/`` are copied into ``models/`` of the candidate and named by
``./models/...`` specs, resolved against the candidate folder on loading, so a
candidate folder can be moved (e.g. into a Kaggle dataset) and still loads. Submission, dedupe
and the service take the candidate with the best **val** F1 among those made
from the same data and split (:func:`pick_candidate`), never the best test F1.

A candidate retrained on people's labels (notebook 07) is saved as a new **version** beside
the old one: ``05_rerank`` is version 1, ``05_rerank.v2`` the next (:func:`next_version`),
each with its own figures and its ``parent``; the leaderboard lists every version.
"""

from __future__ import annotations

import json
import numbers
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from shopee_match.data.paths import candidates_dir
from shopee_match.embed.specs import EncoderSpec
from shopee_match.match.config import MatchConfig

CANDIDATE_FILE = "candidate.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class NoCandidateError(RuntimeError):
    """No saved candidate can be used; the message lists why and which notebook to run."""


@dataclass
class Candidate:
    """A saved way to match, with the figures it was chosen by."""

    name: str
    config: MatchConfig
    val_f1: float
    test_f1: float
    dataset: str
    fingerprint: str
    split_seed: int
    notebook: str
    created: str
    test_f1_upper: float | None = None
    metric: str = "row_f1"  # what val_f1 and test_f1 are: mean row-wise F1, or pair F1
    link: str = "auto"  # how listings with a source column were linked (match.sources)
    version: int = 1  # 1 for a notebook's own candidate; 2, 3, ... retrained on labels
    parent: str | None = None  # the candidate a version was retrained from
    labels: str | None = None  # digest of the labels a version was retrained on
    #: the one-to-one high-precision point chosen on val (``threshold`` on the best mutual
    #: matches' scores, ``min_precision``, val/test precision and recall), or None
    high_precision: dict | None = None
    files: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # file -> content digest at saving
    folder: Path | None = None

    def missing_files(self) -> list[str]:
        """Files the candidate lists that are not in its folder."""
        return [f for f in self.files if not (self.folder / f).exists()]

    def missing_encoders(self) -> list[str]:
        """Local model files or folders its encoder specs name that are not there."""
        out = []
        for text in self.config.encoders.values():
            location = EncoderSpec.parse(text).location
            if Path(location).is_absolute() and not Path(location).exists():
                out.append(location)
        return out

    def changed_files(self) -> list[str]:
        """Files whose contents are not those the candidate was saved with (a truncated or
        replaced model file); candidates saved before hashes were recorded have none."""
        from shopee_match.files import content_digest

        return [f for f, digest in self.hashes.items()
                if (self.folder / f).exists() and content_digest(self.folder / f) != digest]

    def load_scorer(self):
        """The fitted second stage (:mod:`shopee_match.apply.second_stages`), or None
        without one; a file that cannot be loaded is an error naming it."""
        from shopee_match.apply.second_stages import load_second_stage

        stage = self.config.second_stage
        if stage is None:
            return None
        path = self.folder / stage.file
        try:
            return load_second_stage(stage.kind, path)
        except Exception as err:
            raise ValueError(f"candidate {self.name}: its {stage.kind} in {path} cannot be "
                             f"loaded ({type(err).__name__}: {err}); re-run the notebook "
                             f"{self.notebook} that saved it") from err


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second (a candidate's ``created``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def save_candidate(name: str, config: MatchConfig, val_f1: float, test_f1: float, *,
                   dataset: str, fingerprint: str, split_seed: int, notebook: str,
                   test_f1_upper: float | None = None, files: Mapping[str, Any] | None = None,
                   root: str | Path | None = None, metric: str = "row_f1",
                   link: str = "auto", version: int = 1, parent: str | None = None,
                   labels: str | None = None,
                   high_precision: Mapping[str, float] | None = None) -> Candidate:
    """Write (or replace) candidate ``name``; returns it as :func:`load_candidate` would.

    ``files`` maps a file name inside the folder to an existing path (copied; a
    folder is copied whole) or to an object with a ``save(path)`` method (a second stage,
    :mod:`shopee_match.apply.second_stages`). The second stage's ``file`` must be among
    them. ``metric`` names what the F1 figures are (``row_f1`` or ``pair_f1``) and ``link``
    how a catalog with sources was linked (``submit``/``dedupe``/``link`` apply it the same
    way). ``version``, ``parent`` and ``labels`` (a digest of the labels) mark a retrained
    version (:func:`next_version`). ``high_precision`` is the one-to-one operating point
    chosen on val (:func:`~shopee_match.match.metrics.operating_point` of the best mutual
    matches, with ``min_precision``): ``link --high-precision`` accepts at its ``threshold``.
    The folder is written beside and renamed into place, so a reader never sees half a
    candidate.
    """
    from shopee_match.files import content_digest

    if not _NAME.match(name):
        raise ValueError(f"candidate name {name!r}: use letters, digits, '_', '-' and '.'")
    config, bundled = bundle_encoders(config)
    files = {**bundled, **(files or {})}
    stage = config.second_stage
    if stage is not None and stage.file not in files:
        raise ValueError(f"the configuration needs {stage.file!r}; pass it in files")
    root = Path(root) if root else candidates_dir()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for file_name, item in files.items():
            target = staging / file_name
            if isinstance(item, (str, Path)):
                source = Path(item)
                if source.is_dir():
                    shutil.copytree(source, target)
                elif source.is_file():
                    shutil.copyfile(source, target)
                else:
                    raise FileNotFoundError(f"{source} (for candidate file {file_name!r}) "
                                            "not found")
            elif hasattr(item, "save"):
                item.save(target)
            else:
                raise TypeError(f"candidate file {file_name!r}: give a path or an object with a "
                                f"save(path) method, not a {type(item).__name__}")
    except BaseException:  # nothing half-written is left beside the candidates
        shutil.rmtree(staging, ignore_errors=True)
        raise
    meta = {"name": name, "config": config.to_dict(), "val_f1": float(val_f1),
            "test_f1": float(test_f1),
            "test_f1_upper": None if test_f1_upper is None else float(test_f1_upper),
            "dataset": dataset, "fingerprint": fingerprint, "split_seed": int(split_seed),
            "notebook": notebook, "created": utc_now(), "metric": metric, "link": link,
            "version": int(version), "parent": parent, "labels": labels,
            "high_precision": None if high_precision is None else {
                k: float(v) for k, v in high_precision.items()},
            "files": sorted(files),
            "hashes": {f: content_digest(staging / f) for f in sorted(files)}}
    (staging / CANDIDATE_FILE).write_text(json.dumps(meta, indent=2))
    final = root / name
    old = root / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return load_candidate(final)


def bundle_encoders(config: MatchConfig, artifacts: str | Path | None = None
                    ) -> tuple[MatchConfig, dict[str, Path]]:
    """Specs that point at a model kept under the artifacts (``models/<key>/...``, or
    another candidate's ``models/<key>/...``) rewritten to ``./models/<key>/...``, and the
    folders to copy there, so the candidate carries its fine-tuned encoders and can be moved.
    Models elsewhere (a weights file of the user's) stay named by their path."""
    from shopee_match.data.paths import artifacts_dir

    artifacts = Path(artifacts or artifacts_dir()).resolve()
    encoders, files = {}, {}
    for modality, text in config.encoders.items():
        spec = EncoderSpec.parse(text)
        found = spec.location and Path(spec.location).exists()
        inside = Path(spec.location).resolve() if found else None
        if inside is not None and inside.is_relative_to(artifacts):
            parts = inside.relative_to(artifacts).parts
            at = parts.index("models") if "models" in parts[:-1] else -1
            if at >= 0:
                key, rest = parts[at + 1], parts[at + 2:]
                files[f"models/{key}"] = artifacts.joinpath(*parts[:at + 2])
                text = str(spec.at("/".join(("./models", key, *rest))))
        encoders[modality] = text
    return config.replace(encoders=encoders), files


def _resolve(text: str, folder: Path) -> str:
    """A ``./``-relative encoder spec made absolute against the candidate folder."""
    spec = EncoderSpec.parse(text)
    if spec.location.startswith("./"):
        return str(spec.at(str((folder / spec.location).resolve())))
    return text


def load_candidate(folder: str | Path) -> Candidate:
    """Read a candidate folder; a broken or outdated file gives an error saying what to do."""
    folder = Path(folder)
    path = folder / CANDIDATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (not a saved candidate)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the notebook that made it"
                         ) from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a {type(meta).__name__}, not a candidate; re-run the "
                         "notebook that made it")
    config = MatchConfig.from_dict(meta.pop("config", None), source=str(path))
    config = config.replace(encoders={m: _resolve(spec, folder)
                                      for m, spec in config.encoders.items()})
    known = {f for f in Candidate.__dataclass_fields__} - {"config", "folder"}
    missing = sorted({"val_f1", "test_f1", "dataset", "fingerprint", "split_seed"} - set(meta))
    if missing:
        raise ValueError(f"{path} lacks {missing}; re-run the notebook that made it")
    _check_types(meta, path)
    stage = config.second_stage
    for name in [*meta.get("files", []), *meta.get("hashes", {}), *([stage.file] if stage
                                                                     else [])]:
        _check_inside(folder, name, path)
    return Candidate(config=config, folder=folder,
                     **{k: v for k, v in meta.items() if k in known})


#: the type every field of candidate.json must have (``None`` allowed where listed)
_FIELD_TYPES = {"name": (str,), "val_f1": (numbers.Real,), "test_f1": (numbers.Real,),
                "test_f1_upper": (numbers.Real, type(None)), "dataset": (str,),
                "fingerprint": (str,), "split_seed": (int,), "notebook": (str,),
                "created": (str,), "files": (list,), "hashes": (dict,), "metric": (str,),
                "link": (str,), "version": (int,), "parent": (str, type(None)),
                "labels": (str, type(None)), "high_precision": (dict, type(None))}


def _check_types(meta: dict, path: Path) -> None:
    """A hand-edited candidate.json with a wrong type is a clear error, not a later crash."""
    for key, types in _FIELD_TYPES.items():
        value = meta.get(key)
        if key in meta and (isinstance(value, bool) or not isinstance(value, types)):
            raise ValueError(f"{path}: {key} is {value!r}, which is not a "
                             f"{' or '.join(t.__name__ for t in types)}")
        if key in ("val_f1", "test_f1") and not 0.0 <= value <= 1.0:
            raise ValueError(f"{path}: {key} is {value!r}; an F1 lies between 0 and 1")
    if not all(isinstance(f, str) for f in meta.get("files", [])):
        raise ValueError(f"{path}: files must be a list of file names")
    point = meta.get("high_precision")
    if point is not None and (not isinstance(point.get("threshold"), numbers.Real)
                              or isinstance(point.get("threshold"), bool)):
        raise ValueError(f"{path}: high_precision needs a numeric threshold, not "
                         f"{point.get('threshold')!r}; re-run the notebook that made it")


def _check_inside(folder: Path, name: str, path: Path) -> None:
    """A file a candidate names lies inside its folder (not ``../x``, an absolute path or a
    link out of it): loading a candidate never reads files from elsewhere."""
    target = (folder / name).resolve()
    if (not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts
            or not target.is_relative_to(folder.resolve())):
        raise ValueError(f"{path}: the file {name!r} is not inside the candidate folder; a "
                         "candidate may only name its own files")


def leaderboard(fingerprint: str | None = None, split_seed: int | None = None,
                root: str | Path | None = None) -> pd.DataFrame:
    """Every saved candidate, best val F1 first, with whether it is usable here and why not.

    A candidate is usable when it loads (fields of the right types, files inside its folder),
    its files and encoder folders are present and unchanged since it was saved, and (if given)
    it was made from data with ``fingerprint`` and with ``split_seed``.
    """
    root = Path(root) if root else candidates_dir()
    rows = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     ) if root.is_dir() else []
    for folder in folders:
        row = {"candidate": folder.name, "version": None, "val F1": None,
               "test F1 (fair)": None, "metric": "", "link": "", "notebook": "",
               "dataset": "", "created": "", "usable": False, "reason": ""}
        try:
            c = load_candidate(folder)
        except (OSError, ValueError, TypeError) as err:
            rows.append({**row, "reason": f"cannot be read: {err}"})
            continue
        row |= {"version": c.version, "val F1": c.val_f1, "test F1 (fair)": c.test_f1,
                "metric": c.metric, "link": c.link, "notebook": c.notebook,
                "dataset": c.dataset, "created": c.created}
        missing = c.missing_files() + c.missing_encoders()
        changed = [] if missing else c.changed_files()
        if fingerprint is not None and c.fingerprint != fingerprint:
            row["reason"] = (f"made from other data ({c.dataset}, fingerprint {c.fingerprint}; "
                             f"this data has {fingerprint})")
        elif split_seed is not None and c.split_seed != split_seed:
            row["reason"] = f"chosen on split seed {c.split_seed}, not {split_seed}"
        elif missing:
            row["reason"] = f"missing file(s) {missing} in {folder}"
        elif changed:
            row["reason"] = (f"file(s) {changed} in {folder} changed since it was saved "
                             "(truncated or replaced?); re-run the notebook that made it")
        else:
            row["usable"] = True
        rows.append(row)
    table = pd.DataFrame(rows, columns=["candidate", "version", "val F1", "test F1 (fair)",
                                        "metric", "link", "notebook", "dataset", "created",
                                        "usable", "reason"])
    order = table.assign(_v=table["val F1"].astype(float).fillna(-1.0)).sort_values(
        ["usable", "_v", "candidate"], ascending=[False, False, True], kind="stable")
    return order.drop(columns="_v").reset_index(drop=True)


def next_version(name: str, root: str | Path | None = None, parent: str | None = None,
                 labels: str | None = None) -> tuple[str, int]:
    """``(folder name, version)`` for the next version of candidate ``name`` (itself version
    1, or a version name such as ``05_rerank.v2``): one above the highest saved; or, when a
    saved version was retrained from ``parent`` on the same ``labels`` (digest), that one
    (retraining it again gives it again: it is replaced, not duplicated)."""
    root = Path(root) if root else candidates_dir()
    base = re.sub(r"\.v\d+$", "", name)
    versions = [1]
    for folder in root.glob(f"{base}.v*") if root.is_dir() else []:
        found = re.fullmatch(rf"{re.escape(base)}\.v(\d+)", folder.name)
        if found and (folder / CANDIDATE_FILE).is_file():
            versions.append(int(found.group(1)))
            if labels is not None:
                try:
                    meta = json.loads((folder / CANDIDATE_FILE).read_text())
                except ValueError:  # a broken file: the leaderboard says so; not this one
                    continue
                if meta.get("labels") == labels and meta.get("parent") == parent:
                    return folder.name, int(found.group(1))
    version = max(versions) + 1
    return f"{base}.v{version}", version


def save_version(parent: Candidate, tuned, files: Mapping[str, Any], labels: str,
                 notebook: str, root: str | Path | None = None) -> Candidate:
    """Save ``tuned`` (a :class:`~shopee_match.match.selection.Tuned`: configuration and
    figures) with its ``files`` as the next version of ``parent``, retrained on the labels
    whose digest is ``labels`` (:func:`next_version`: the same labels again replace that
    version)."""
    name, version = next_version(parent.name, root, parent=parent.name, labels=labels)
    return save_candidate(
        name, tuned.config, tuned.val_f1, tuned.test_f1, test_f1_upper=tuned.test_f1_upper,
        dataset=parent.dataset, fingerprint=parent.fingerprint, split_seed=parent.split_seed,
        notebook=notebook, metric=parent.metric, link=parent.link, files=files, root=root,
        version=version, parent=parent.name, labels=labels)


def pick_candidate(fingerprint: str, split_seed: int, name: str | None = None,
                   root: str | Path | None = None) -> tuple[Candidate, pd.DataFrame]:
    """The usable candidate with the best val F1 (or the one named), and the leaderboard.

    Ties in val F1 go to the name that sorts first. Raises :class:`NoCandidateError`
    with every candidate's reason when none (or not the named one) can be used, and when
    the usable ones were chosen on different figures (:func:`require_one_scope`).
    """
    root = Path(root) if root else candidates_dir()
    table = leaderboard(fingerprint, split_seed, root)
    if name is not None:
        rows = table[table["candidate"] == name]
        if rows.empty:
            raise NoCandidateError(f"no candidate named {name!r} in {root}; saved: "
                                   f"{table['candidate'].tolist() or 'none'}")
        if not rows["usable"].iloc[0]:
            raise NoCandidateError(f"candidate {name!r} cannot be used: {rows['reason'].iloc[0]}")
        return load_candidate(root / name), table
    usable = table[table["usable"]]
    if usable.empty:
        reasons = "".join(f"\n  {r.candidate}: {r.reason}" for r in table.itertuples())
        raise NoCandidateError(
            f"no usable candidate in {root} for this data (fingerprint {fingerprint}, split "
            f"seed {split_seed}).{reasons}\nRun notebooks/03_threshold_f1_sweep.ipynb on this "
            "dataset (`shopee-match report --only 03 --dataset NAME`) to save one.")
    require_one_scope(usable)
    return load_candidate(root / usable["candidate"].iloc[0]), table


def require_one_scope(rows: pd.DataFrame) -> None:
    """Raise :class:`NoCandidateError` when the candidates of ``rows`` (leaderboard rows)
    were chosen on different metrics or link modes: a row-wise F1 and a pair F1 (or pairs
    across shops and every pair) do not compare, so none of them is "the best on val"."""
    if len(rows[["metric", "link"]].drop_duplicates()) < 2:
        return
    listing = "".join(f"\n  {r['candidate']}: val {r['val F1']:.4f} as {r['metric']}, link "
                      f"{r['link']}" for _, r in rows.iterrows())
    raise NoCandidateError(
        "the saved candidates were chosen on different figures, so their val F1 do not "
        f"compare:{listing}\nName the one to use (CANDIDATE in notebooks 06-07, --candidate "
        "on the command line), or run notebooks 03-05 again with the same METRIC and LINK.")


def comparable_candidates(fingerprint: str, split_seed: int, names: Sequence[str],
                          metric: str, link: str, root: str | Path | None = None
                          ) -> list[Candidate]:
    """The saved candidates among ``names`` (in that order) usable on this data and split and
    chosen on ``metric`` with ``link``: those whose val figures compare with a candidate
    being made so (notebooks 04 and 05 show them beside their own steps)."""
    root = Path(root) if root else candidates_dir()
    table = leaderboard(fingerprint, split_seed, root).set_index("candidate")
    return [load_candidate(root / name) for name in names
            if name in table.index and table.at[name, "usable"]
            and (table.at[name, "metric"], table.at[name, "link"]) == (metric, link)]


def same_scope(a: Candidate, b: Candidate) -> bool:
    """Whether two candidates' val figures compare: the same metric and link mode."""
    return (a.metric, a.link) == (b.metric, b.link)
