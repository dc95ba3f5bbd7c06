"""`make lab`: JupyterLab from the project's environment, the kit's kernel registered."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.notebooks  # starts a server: with the slower tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_make_lab_serves_jupyterlab_with_the_kit_kernel(tmp_path):
    port, token = free_port(), "test-token"
    args = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                status, _ = get(f"{base}/api/status?token={token}")
                break
            except OSError:
                assert server.poll() is None, "make lab exited early"
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        status, page = get(f"{base}/lab?token={token}")
        assert status == 200 and b"JupyterLab" in page
        _, specs = get(f"{base}/api/kernelspecs?token={token}")
        spec = json.loads(specs)["kernelspecs"]["shopee-match"]["spec"]
        assert spec["display_name"] == "Python (shopee-match)"
        kernel_python = spec["argv"][0]
        out = subprocess.run([kernel_python, "-c", "import shopee_match, sys; print(sys.prefix)"],
                             capture_output=True, text=True, check=True)
        assert Path(out.stdout.strip()).resolve() == (ROOT / ".venv").resolve()
        _, contents = get(f"{base}/api/contents?token={token}")
        names = {item["name"] for item in json.loads(contents)["content"]}
        assert "03_threshold_f1_sweep.ipynb" in names  # opened on notebooks/
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
