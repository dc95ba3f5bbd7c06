"""The machine a report or benchmark names beside its timings."""

from __future__ import annotations

from shopee_match.machine import describe_machine, machine_line

X86_VNNI = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
"""
X86_PLAIN = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t: fpu avx2 fma\n"
ARM = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd asimddp i8mm\n"


def test_cpu_model_and_int8_instructions_are_read_from_cpuinfo():
    vnni = describe_machine(X86_VNNI)
    assert vnni["cpu"] == "AMD EPYC 9R14" and vnni["int8_dot"] == ["avx512_vnni"]
    assert describe_machine(X86_PLAIN)["int8_dot"] == []
    assert describe_machine(ARM)["int8_dot"] == ["asimddp", "i8mm"]
    assert describe_machine("")["int8_dot"] is None  # no cpuinfo: unknown, not "none"


def test_one_line_says_what_timings_depend_on():
    facts = {"cpu": "AMD EPYC 9R14", "cores": 2, "memory_gb": 23.5, "int8_dot": ["avx512_vnni"]}
    assert machine_line(facts) == ("machine: AMD EPYC 9R14, 2 core(s), 24 GB; int8 "
                                   "dot-product instructions: avx512_vnni")
    assert machine_line(facts | {"int8_dot": [], "memory_gb": None}).endswith(
        "2 core(s); int8 dot-product instructions: none")
    assert "instructions: unknown" in machine_line(facts | {"int8_dot": None})
