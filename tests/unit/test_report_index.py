"""The report's front page: the candidates' leaderboard first, then the notebooks."""

from __future__ import annotations

import json

from shopee_match.machine import describe_machine
from shopee_match.report import NotebookRun, write_index


def run(tmp_path, name, records):
    return NotebookRun(name, "ok", 1.0, tmp_path / f"{name}.ipynb", tmp_path / f"{name}.html",
                       records)


def test_index_opens_with_the_leaderboard_and_the_candidate_used(tmp_path):
    board = [
        {"candidate": "04_finetuned", "val F1": 0.86, "test F1 (fair)": 0.84, "usable": True,
         "used": True, "reason": ""},
        {"candidate": "03_thresholds", "val F1": 0.84, "test F1 (fair)": 0.85, "usable": True,
         "used": False, "reason": ""},
        {"candidate": "old", "val F1": 0.99, "test F1 (fair)": 0.99, "usable": False,
         "used": False, "reason": "made from other data <demo-shopee>"},
    ]
    runs = [run(tmp_path, "03_threshold_f1_sweep", {"best_val_f1": 0.84}),
            run(tmp_path, "06_submission", {"candidate": "04_finetuned", "leaderboard": board})]
    write_index(runs, tmp_path, "demo")
    page = (tmp_path / "index.html").read_text()
    assert (tmp_path / "leaderboard.png").stat().st_size > 1000
    assert page.index("leaderboard.png") < page.index("03_threshold_f1_sweep.html")
    assert "used <b>04_finetuned</b>" in page
    assert "<td>0.8600</td><td>0.8400</td>" in page
    assert "&lt;demo-shopee&gt;" in page  # reasons are escaped


def test_index_without_a_submission_says_where_the_leaderboard_comes_from(tmp_path):
    write_index([run(tmp_path, "00_eda", {"n": 1})], tmp_path, "ci")
    page = (tmp_path / "index.html").read_text()
    assert "No leaderboard in this report" in page and "00_eda.html" in page
    assert not (tmp_path / "leaderboard.png").exists()


def test_index_and_metrics_name_the_machine_the_times_were_measured_on(tmp_path):
    write_index([run(tmp_path, "00_eda", {"n": 1})], tmp_path, "ci")
    machine = json.loads((tmp_path / "metrics.json").read_text())["machine"]
    assert machine == describe_machine()
    page = (tmp_path / "index.html").read_text()
    assert f"{machine['cores']} core(s)" in page and "int8 dot-product instructions" in page


def test_leaderboard_names_the_metric_its_candidates_were_chosen_on(tmp_path):
    """A pair-F1 leaderboard (a two-shop catalog) is not labelled row-wise F1."""
    board = [{"candidate": "05_rerank", "val F1": 0.86, "test F1 (fair)": 0.88,
              "metric": "pair_f1", "usable": True, "used": True, "reason": ""},
             {"candidate": "03_thresholds", "val F1": 0.82, "test F1 (fair)": 0.81,
              "metric": "pair_f1", "usable": True, "used": False, "reason": ""}]
    write_index([run(tmp_path, "06_submission", {"candidate": "05_rerank",
                                                 "leaderboard": board})], tmp_path, "ci")
    page = (tmp_path / "index.html").read_text()
    assert "best <b>val</b> F1 (pair F1)" in page


def test_leaderboard_chart_axis_follows_the_metric_column():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from shopee_match.plots import leaderboard_chart

    def axis(metrics):
        rows = [{"candidate": f"c{i}", "val F1": 0.8, "test F1 (fair)": 0.7, "usable": True}
                | ({} if m is None else {"metric": m}) for i, m in enumerate(metrics)]
        ax = leaderboard_chart(pd.DataFrame(rows))
        plt.close(ax.figure)
        return ax.get_xlabel()

    assert axis(["pair_f1", "pair_f1"]) == "pair F1"
    assert axis(["row_f1"]) == "mean row-wise F1"
    assert axis([None, None]) == "mean row-wise F1"  # records from before the metric column
    assert axis(["row_f1", "pair_f1"]) == "F1"  # mixed (named candidates): no single metric
