"""Which machine a timing was measured on: CPU model, cores, memory, int8 instructions.

Two "2-core" machines can differ by 2x in run time, and int8 models by more: on a CPU with
int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX, Arm's dot product) an int8
cross-encoder scored 2.2x the pairs of fp32 where another CPU gave 1.7x. So the report
(``metrics.json``, ``index.html``) and the benchmarks print this beside their figures, and
timings are compared only between runs on the same machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: CPU flags (``/proc/cpuinfo``) of instructions that multiply int8 vectors in hardware
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def describe_machine(cpuinfo: str | None = None) -> dict:
    """``{"cpu", "cores", "memory_gb", "int8_dot"}`` of this machine. ``cpuinfo`` is the text
    of ``/proc/cpuinfo`` (read here on Linux); without it ``int8_dot`` is None (unknown),
    else the :data:`INT8_DOT_FLAGS` the CPU has (an empty list: none)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())  # the first CPU's
    cpu = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return {"cpu": cpu, "cores": cores, "memory_gb": _memory_gb(),
            "int8_dot": [f for f in INT8_DOT_FLAGS if f in flags] if flags else None}


def machine_line(facts: dict | None = None) -> str:
    """One line naming the machine (:func:`describe_machine`), for a report or a benchmark."""
    facts = facts or describe_machine()
    memory = f", {facts['memory_gb']:.0f} GB" if facts.get("memory_gb") else ""
    int8 = facts.get("int8_dot")
    dot = ("unknown" if int8 is None else ", ".join(int8) if int8 else "none")
    return (f"machine: {facts['cpu']}, {facts['cores']} core(s){memory}; "
            f"int8 dot-product instructions: {dot}")


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # not on this platform
        return None
