"""Run every benchmark in this folder (``make bench``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> int:
    from shopee_match.machine import machine_line

    print(machine_line())  # timings compare only between runs on the same machine
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {path.stem}", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
