"""Notebook 07's labeller in a real browser: JupyterLab in headless Chromium, driven by
selenium, clicking Same, Different, Undo, Same on a queue of three pairs; then the labels file.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them where it
can, see ``.ci/install-browser``); skipped with a message where they are missing. Set
``SHOPEE_MATCH_SCREENSHOT=path.png`` to keep a screenshot of the widget (the README's).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def labeller_notebook(folder: Path) -> Path:
    """Notebook 07 up to its labeller cell, with parameters for three pairs labelled by hand
    in a cell after the ``parameters`` one (as papermill injects them)."""
    nb = nbformat.read(ROOT / "notebooks" / "07_review_pairs.ipynb", as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if "display(labeller.widget)" in c.source)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[:last + 1]
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        'DATASET = "demo-tiny"\nQUEUE_SIZE = 3\nORACLE = False\nIMAGE_SIZE = 96'))
    path = folder / "07_review_pairs.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def lab(tiny_env, tmp_path):
    """JupyterLab on a free loopback port, serving a folder with the labeller notebook."""
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install "
                    "chromium chromium-driver; `make test` does it where it can)")
    folder = tmp_path / "lab"
    folder.mkdir()
    labeller_notebook(folder)
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={folder}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.disable_check_xsrf=True", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
    yield url
    server.terminate()
    server.wait(timeout=20)


def test_clicks_in_jupyterlab_reach_the_labels_file(lab, tiny_env, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from shopee_match.train.labels import current_labels, labels_path, read_label_lines

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1300"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(f"{lab}/lab/tree/07_review_pairs.ipynb")
        wait = WebDriverWait(driver, 240, poll_frequency=0.5)
        wait.until(lambda d: d.execute_script(
            "const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
            "return !!(w && w.sessionContext && w.sessionContext.session &&"
            " w.sessionContext.session.kernel)"))
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")

        def button(label):
            return wait.until(lambda d: d.find_element(
                By.XPATH, f"//button[contains(@class, 'jupyter-button')]"
                          f"[starts-with(., '{label}')]"))

        def status(labelled):
            wait.until(lambda d: f"labelled {labelled} " in d.find_element(
                By.XPATH, "//*[contains(., 'remaining') and contains(@class, 'widget-html')]"
            ).text.replace("\n", " "))

        button("Same").click()
        status(1)
        button("Different").click()
        status(2)
        button("Undo").click()
        status(1)
        button("Same").click()
        status(2)
        shot = os.environ.get("SHOPEE_MATCH_SCREENSHOT")
        widget = driver.find_element(By.XPATH, "//div[contains(@class, 'widget-vbox')]")
        driver.execute_script("arguments[0].scrollIntoView()", widget)
        widget.screenshot(str(tmp_path / "labeller.png"))
        if shot:
            shutil.copyfile(tmp_path / "labeller.png", shot)
    finally:
        driver.quit()
    lines = read_label_lines(labels_path())
    assert lines["label"].tolist() == ["same", "different", "undo", "same"]
    answers = current_labels(labels_path())
    assert answers["label"].tolist() == ["same", "same"]
    first, second = lines.iloc[0], lines.iloc[1]
    assert (answers["posting_id_1"].tolist(), answers["posting_id_2"].tolist()) == (
        [first["posting_id_1"], second["posting_id_1"]],
        [first["posting_id_2"], second["posting_id_2"]])  # the undone pair was relabelled
    assert (tmp_path / "labeller.png").stat().st_size > 10_000
