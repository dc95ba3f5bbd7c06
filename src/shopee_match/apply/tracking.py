"""Candidate versions in MLflow: parameters, metrics and model files of each saved version.

Optional: without MLflow installed the kit works the same and :func:`log_version` says how
to install it. The tracking store is ``$MLFLOW_TRACKING_URI`` (a team's server) or else a
local SQLite file ``artifacts/mlruns/mlflow.db`` with the files beside it in
``artifacts/mlruns/artifacts/``; see it with
``mlflow ui --backend-store-uri sqlite:///artifacts/mlruns/mlflow.db`` (the ``mlflow``
package, not ``mlflow-skinny``, brings the UI).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)
EXPERIMENT = "shopee-match"


def local_store() -> Path:
    """``artifacts/mlruns``: the local MLflow store when no tracking URI is set."""
    from shopee_match.data.paths import artifacts_dir

    return artifacts_dir() / "mlruns"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the local SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{local_store() / 'mlflow.db'}"


def _client(experiment: str, create: bool):
    """An MLflow client on :func:`tracking_uri` and the experiment's id (created when
    ``create``, else None when there is none yet)."""
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None or not create:
        return client, None if found is None else found.experiment_id
    location = ((local_store() / "artifacts").resolve().as_uri()
                if "MLFLOW_TRACKING_URI" not in os.environ else None)
    return client, client.create_experiment(experiment, artifact_location=location)


def log_version(candidate, params: Mapping | None = None, metrics: Mapping | None = None,
                experiment: str = EXPERIMENT) -> str | None:
    """One MLflow run for a saved candidate version: its parameters (``params`` plus the
    candidate's metric, link and split seed), val/test figures (``metrics`` added), tags
    (candidate, version, parent, labels digest, fingerprint, notebook, dataset) and its folder
    as artifacts under ``candidate/``. A version already logged (same name, version and
    labels) is not logged again: its run id is returned. None (logged) when MLflow is not
    installed."""
    try:
        from mlflow.entities import Metric, Param, RunTag
    except ImportError:
        logger.warning("MLflow is not installed: version %s of %s is saved but not logged "
                       "(pip install mlflow-skinny sqlalchemy alembic, or mlflow for its UI)",
                       candidate.version, candidate.name)
        return None
    import time

    runs = logged_versions(experiment)
    same = runs[(runs["candidate"] == candidate.name) & (runs["version"] == candidate.version)
                & (runs["labels"] == (candidate.labels or ""))]
    if len(same):
        return str(same["run"].iloc[0])
    client, experiment_id = _client(experiment, create=True)
    tags = {"candidate": candidate.name, "version": str(candidate.version),
            "parent": candidate.parent or "", "fingerprint": candidate.fingerprint,
            "notebook": candidate.notebook, "dataset": candidate.dataset,
            "labels": candidate.labels or ""}
    run_id = client.create_run(experiment_id, run_name=candidate.name, tags=tags).info.run_id
    now = int(time.time() * 1000)
    figures = {"val_f1": candidate.val_f1, "test_f1": candidate.test_f1,
               **({"test_f1_upper": candidate.test_f1_upper}
                  if candidate.test_f1_upper is not None else {}), **(metrics or {})}
    settings = {"metric": candidate.metric, "link": candidate.link,
                "split_seed": candidate.split_seed, **(params or {})}
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in figures.items()],
                     params=[Param(k, str(v)[:6000]) for k, v in settings.items()],
                     tags=[RunTag("mlflow.note.content", f"saved in {candidate.folder}")])
    client.log_artifacts(run_id, str(candidate.folder), artifact_path="candidate")
    client.set_terminated(run_id)
    return run_id


def logged_versions(experiment: str = EXPERIMENT):
    """The runs logged so far (a DataFrame: run, candidate, version, labels digest, val/test
    F1), oldest first; None when MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return None
    import pandas as pd

    client, experiment_id = _client(experiment, create=False)
    runs = [] if experiment_id is None else client.search_runs(
        [experiment_id], order_by=["attributes.start_time ASC"])
    return pd.DataFrame([{"run": r.info.run_id, "candidate": r.data.tags.get("candidate"),
                          "version": int(r.data.tags.get("version", 0)),
                          "labels": r.data.tags.get("labels", ""),
                          "val_f1": r.data.metrics.get("val_f1"),
                          "test_f1": r.data.metrics.get("test_f1")} for r in runs],
                        columns=["run", "candidate", "version", "labels", "val_f1", "test_f1"])
