"""Run the numbered notebooks with papermill and publish them as an HTML report.

For every ``notebooks/NN_*.ipynb`` in order: execute it with the parameters of
the chosen profile (``notebooks/profiles.yaml``), save the executed notebook,
export it to HTML (also when it failed, so the error is visible), and collect
its ``record()`` values into ``metrics.json`` and an ``index.html``.
"""

from __future__ import annotations

import html
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopee_match.data.paths import project_home, reports_dir
from shopee_match.machine import describe_machine, machine_line
from shopee_match.notebook import read_records

KERNEL_NAME = "shopee-match"


@dataclass
class NotebookRun:
    """Outcome of one notebook: where its files are, how long it took, what it recorded."""

    name: str
    status: str
    seconds: float
    executed: Path
    html: Path
    records: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def load_profile(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """Parameters of a named profile from ``profiles.yaml`` (``ci``, ``demo``, ``full``…)."""
    import yaml

    path = Path(path) if path else project_home() / "notebooks" / "profiles.yaml"
    profiles = yaml.safe_load(path.read_text())
    if name not in profiles:
        raise ValueError(f"Unknown profile {name!r}; {path} defines {sorted(profiles)}.")
    return dict(profiles[name] or {})


def find_notebooks(folder: str | Path) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) of a folder, in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def run_report(
    profile: str = "demo",
    overrides: dict[str, Any] | None = None,
    notebooks_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    hide_code: bool = False,
    only: list[str] | None = None,
    progress: bool = True,
) -> list[NotebookRun]:
    """Execute the notebooks and write the report; returns one :class:`NotebookRun` each.

    ``overrides`` replace profile values (``{"DATASET": "shopee"}``); a name no
    notebook declares is an error. ``only`` keeps notebooks whose name starts
    with one of the given prefixes (``["00", "03"]``).
    """
    import papermill as pm

    notebooks_dir = Path(notebooks_dir) if notebooks_dir else project_home() / "notebooks"
    out_dir = Path(out_dir) if out_dir else reports_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(notebooks_dir)
    if only:
        notebooks = [p for p in notebooks if any(p.stem.startswith(o) for o in only)]
    if not notebooks:
        raise FileNotFoundError(f"No numbered notebooks (NN_*.ipynb) selected in {notebooks_dir}")
    declared = {p: set(pm.inspect_notebook(str(p))) for p in notebooks}
    params = {**load_profile(profile, notebooks_dir / "profiles.yaml"), **(overrides or {})}
    unknown = set(overrides or {}) - set().union(*declared.values())
    if unknown:
        raise ValueError(f"No notebook has parameter(s) {sorted(unknown)}; check the spelling.")
    ensure_kernel()
    runs = []
    for path in notebooks:
        mine = {k: v for k, v in params.items() if k in declared[path]}
        runs.append(_run_one(path, out_dir, mine, hide_code, progress))
    write_index(runs, out_dir, profile)
    return runs


def ensure_kernel() -> None:
    """Install (once) a Jupyter kernel named ``shopee-match`` that runs this Python."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        spec = None
    if spec is not None and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
        return
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="Python (shopee-match)", prefix=sys.prefix)
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    if Path(spec.argv[0]).resolve() != Path(sys.executable).resolve():
        raise RuntimeError(
            f"A Jupyter kernel named {KERNEL_NAME!r} in {spec.resource_dir} runs "
            f"{spec.argv[0]}, not this Python ({sys.executable}); remove that folder."
        )


def _run_one(path: Path, out_dir: Path, params: dict, hide_code: bool,
             progress: bool) -> NotebookRun:
    import papermill as pm

    executed = out_dir / path.name
    page = out_dir / f"{path.stem}.html"
    start = time.perf_counter()
    status, error = "ok", ""
    try:
        pm.execute_notebook(str(path), str(executed), parameters=params, kernel_name=KERNEL_NAME,
                            cwd=str(path.parent), progress_bar=progress)
    except pm.PapermillExecutionError as err:
        status, error = "failed", f"{err.ename}: {err.evalue}"
    except Exception as err:  # kernel died, timeout…: still report it, go on with the others
        status, error = "failed", f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    records = {}
    if executed.is_file():
        export_html(executed, page, hide_code)
        records = read_records(executed)
    else:
        page.write_text(f"<!doctype html><meta charset='utf-8'><h1>{html.escape(path.stem)}"
                        f"</h1><pre>{html.escape(error)}</pre>", encoding="utf-8")
    return NotebookRun(path.stem, status, round(seconds, 1), executed, page, records, error)


def export_html(notebook: Path, page: Path, hide_code: bool = False) -> None:
    """Write the executed notebook as one HTML page (code cells hidden if asked)."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(exclude_input=hide_code)
    exporter.register_preprocessor(CoalesceStreamsPreprocessor(enabled=True))  # one bar, not 100
    body, _ = exporter.from_notebook_node(nb)
    page.write_text(body, encoding="utf-8")


def write_index(runs: list[NotebookRun], out_dir: Path, profile: str) -> None:
    """``metrics.json`` with the machine, every notebook's records and ``index.html``: the
    candidates' leaderboard first (from the submission notebook's records), then one row per
    notebook (run times compare only between reports of the same machine)."""
    machine = describe_machine()
    metrics = {"profile": profile, "machine": machine, "notebooks": {
        r.name: {"status": r.status, "seconds": r.seconds, "error": r.error, "records": r.records}
        for r in runs}}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    rows = []
    for r in runs:
        numbers = "<br>".join(f"{html.escape(k)} = {html.escape(_short(v))}"
                              for k, v in r.records.items())
        colour = "#1a7f37" if r.status == "ok" else "#cf222e"
        rows.append(
            f"<tr><td><a href='{html.escape(r.html.name)}'>{html.escape(r.name)}</a></td>"
            f"<td style='color:{colour}'>{r.status}<br><small>{html.escape(r.error)}</small></td>"
            f"<td>{r.seconds:.1f} s</td><td>{numbers}</td></tr>")
    (out_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>shopee-match report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border-bottom:1px solid #ddd;"
        "padding:.4em .8em;vertical-align:top;text-align:left}</style>"
        f"<h1>shopee-match report</h1><p>profile: <b>{html.escape(profile)}</b><br>"
        f"<small>{html.escape(machine_line(machine))}</small></p>"
        + _leaderboard_section(runs, out_dir) +
        "<h2>Notebooks</h2>"
        "<table><tr><th>notebook</th><th>status</th><th>time</th><th>key numbers</th></tr>"
        + "".join(rows) + "</table>", encoding="utf-8")


def _leaderboard_section(runs: list[NotebookRun], out_dir: Path) -> str:
    """HTML of the candidates' leaderboard (chart + table) recorded by the submission
    notebook, or a line saying that no notebook in this report recorded one."""
    source = next((r for r in runs if "leaderboard" in r.records), None)
    if source is None or not source.records["leaderboard"]:
        return ("<h2>Candidates</h2><p>No leaderboard in this report: it comes from the "
                "submission notebook (06), which did not run or saw no candidate.</p>")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from shopee_match.plots import leaderboard_chart, metric_label

    board = pd.DataFrame(source.records["leaderboard"])
    ax = leaderboard_chart(board)
    ax.figure.savefig(out_dir / "leaderboard.png", dpi=110)
    plt.close(ax.figure)
    used = source.records.get("candidate", "")
    cells = []
    for row in board.itertuples(index=False):
        row = dict(zip(board.columns, row))
        style = " style='font-weight:bold'" if row.get("used") else ""
        cells.append(
            f"<tr{style}><td>{html.escape(str(row['candidate']))}</td>"
            f"<td>{_version(row.get('version'))}</td><td>{_f1(row['val F1'])}</td>"
            f"<td>{_f1(row['test F1 (fair)'])}</td>"
            f"<td>{'yes' if row['usable'] else 'no'}</td>"
            f"<td><small>{html.escape(str(row.get('reason') or ''))}</small></td></tr>")
    return (
        "<h2>Candidates</h2>"
        f"<p>The submission used <b>{html.escape(str(used))}</b> "
        f"(<a href='{html.escape(source.html.name)}'>{html.escape(source.name)}</a>): the "
        f"usable candidate with the best <b>val</b> F1 ({metric_label(board)}). The fair test "
        "F1 is reported, never used to choose.</p>"
        "<img src='leaderboard.png' alt='val and fair test F1 per candidate' "
        "style='max-width:760px'>"
        "<table><tr><th>candidate</th><th>version</th><th>val F1</th><th>test F1 (fair)</th>"
        "<th>usable</th><th>reason</th></tr>" + "".join(cells) + "</table>")


def _version(value: Any) -> str:
    return "" if value is None or value != value else f"v{int(value)}"


def _f1(value: Any) -> str:
    return "" if value is None else f"{float(value):.4f}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) < 120 else text[:117] + "..."
