"""Protected tests for module 01 (Setup): version parsing, /proc/meminfo parsing, timing a matmul,
and writing the system report atomically.

Run against the exported package; imports module 01 only. References are hand computations,
Python's own tuple ordering and the json module.
"""
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.setup import (
    check_memory, check_numpy, check_python, load_system_report, matmul_flops, measure_matmul_gflops,
    memory_info, parse_meminfo, parse_version, reference_gflops, system_report, write_system_report)

checks = settings(max_examples=40, deadline=None, derandomize=True, database=None)


# --- parse_version -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("3.11.4", (3, 11, 4)),
    ("1.26.0rc1", (1, 26, 0)),
    ("2.0.0.dev0+git20240101", (2, 0, 0)),
    ("10", (10,)),
    ("1.24.4-beta", (1, 24, 4)),
])
def test_parse_version_examples(text, expected):
    assert parse_version(text) == expected


@checks
@given(parts=st.lists(st.integers(0, 10_000), min_size=1, max_size=5),
       suffix=st.sampled_from(["", "rc1", "a2", ".dev0", "+local.7", "-beta", "b3"]))
def test_parse_version_reads_the_numeric_release(parts, suffix):
    text = ".".join(map(str, parts)) + suffix
    assert parse_version(text) == tuple(parts)


@checks
@given(a=st.lists(st.integers(0, 30), min_size=3, max_size=3), b=st.lists(st.integers(0, 30), min_size=3, max_size=3))
def test_parse_version_orders_numerically_not_as_strings(a, b):
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    assert (parse_version(va) < parse_version(vb)) == (tuple(a) < tuple(b))


def test_parse_version_ten_is_after_nine():
    assert parse_version("3.9") < parse_version("3.10")       # a string comparison gets this wrong
    assert parse_version("1.9.0") < parse_version("1.24.0")


@pytest.mark.parametrize("bad", ["banana", "", "...", "version three"])
def test_parse_version_rejects_text_without_a_number(bad):
    with pytest.raises(ValueError) as e:
        parse_version(bad)
    assert repr(bad) in str(e.value)


def test_parse_version_rejects_non_strings():
    with pytest.raises(TypeError):
        parse_version(3.9)


@pytest.mark.parametrize("version, ok", [("3.9", False), ("3.9.18", False), ("3.10.0", True), ("3.12.1", True)])
def test_check_python_compares_versions(version, ok):
    res = check_python(version)
    assert res.ok is ok
    assert bool(res.advice) is (not ok)


@pytest.mark.parametrize("version, ok", [("1.9.0", False), ("1.23.5", False), ("1.24.0", True), ("2.1.0", True)])
def test_check_numpy_compares_versions(version, ok):
    assert check_numpy(version).ok is ok


# --- parse_meminfo -----------------------------------------------------------------------------------

MEMINFO = """MemTotal:       16314788 kB
MemFree:         2000000 kB
MemAvailable:    9876544 kB
Buffers:          100000 kB
Cached:          3000000 kB
SwapTotal:       2097148 kB
HugePages_Total:       0
"""


def test_parse_meminfo_reads_kib_as_bytes():
    info = parse_meminfo(MEMINFO)
    assert info["total_bytes"] == 16314788 * 1024
    assert info["available_bytes"] == 9876544 * 1024


def test_parse_meminfo_without_memavailable_adds_free_buffers_cached():
    old_kernel = "\n".join(line for line in MEMINFO.splitlines() if not line.startswith("MemAvailable"))
    info = parse_meminfo(old_kernel)
    assert info["total_bytes"] == 16314788 * 1024
    assert info["available_bytes"] == (2000000 + 100000 + 3000000) * 1024


@checks
@given(total=st.integers(1, 2**40), avail=st.integers(0, 2**40), free=st.integers(0, 2**30),
       cached=st.integers(0, 2**30), with_available=st.booleans())
def test_parse_meminfo_any_values(total, avail, free, cached, with_available):
    lines = [f"MemTotal: {total} kB", f"MemFree: {free} kB", f"Cached: {cached} kB"]
    if with_available: lines.insert(1, f"MemAvailable: {avail} kB")
    info = parse_meminfo("\n".join(lines) + "\n")
    assert info["total_bytes"] == total * 1024
    assert info["available_bytes"] == (avail if with_available else free + cached) * 1024


def test_parse_meminfo_needs_memtotal():
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo("hello\nworld\n")


def test_memory_info_reads_the_given_file(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text(MEMINFO)
    assert memory_info(path) == dict(total_bytes=16314788 * 1024, available_bytes=9876544 * 1024)


def test_check_memory_flags_low_memory():
    gib = 1024 ** 3
    assert check_memory(dict(total_bytes=8 * gib, available_bytes=4 * gib)).ok
    low_total = check_memory(dict(total_bytes=gib, available_bytes=gib // 2))
    assert not low_total.ok and low_total.advice
    assert not check_memory(dict(total_bytes=8 * gib, available_bytes=gib // 4)).ok


# --- measure_matmul_gflops ---------------------------------------------------------------------------

class FakeTimer:
    "A clock whose timed runs last exactly the given durations (and that counts its calls)."
    def __init__(self, durations):
        self.times, t = [], 100.0
        for d in durations:
            self.times += [t, t + d]
            t += d + 3.0
        self.calls = 0

    def __call__(self):
        value = self.times[self.calls]
        self.calls += 1
        return value


@pytest.mark.parametrize("durations", [[0.004, 0.001, 0.002], [0.5], [0.3, 0.1, 0.2, 0.9, 0.4], [0.25, 0.75]])
def test_measure_matmul_gflops_uses_the_median_run(durations):
    n = 16
    timer = FakeTimer(durations)
    got = measure_matmul_gflops(n=n, repeats=len(durations), timer=timer)
    median = float(np.median(durations))
    assert got == pytest.approx(2 * n ** 3 / median / 1e9, rel=1e-9)
    assert timer.calls == 2 * len(durations)     # one start and one stop per timed run


def test_measure_matmul_gflops_real_clock_is_positive():
    assert measure_matmul_gflops(n=32, repeats=2) > 0


def test_measure_matmul_gflops_rejects_a_coarse_timer():
    with pytest.raises(RuntimeError):
        measure_matmul_gflops(n=8, repeats=3, timer=lambda: 1.0)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=-3), dict(repeats=0)])
def test_measure_matmul_gflops_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        measure_matmul_gflops(**{"n": 8, "repeats": 2, **kwargs})


def test_matmul_flops_is_two_n_cubed():
    assert matmul_flops(2) == 16
    assert matmul_flops(1000) == 2_000_000_000


# --- write_system_report / load_system_report --------------------------------------------------------

REPORT = {"schema": 1, "ok": True, "matmul": {"n": 64, "repeats": 3, "gflops": 12.5}, "checks": [],
          "note": "ünïcode ✅"}


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "system_report.json")


def test_write_system_report_round_trips_as_json(tmp_path):
    path = tmp_path / "nested" / "system_report.json"
    written = write_system_report(path, report=REPORT)
    assert os.path.samefile(written, path)
    assert json.loads(path.read_text(encoding="utf-8")) == REPORT
    assert load_system_report(path) == REPORT
    assert reference_gflops(path) == 12.5
    assert leftovers(path.parent) == []


def test_write_system_report_replaces_an_old_report(tmp_path):
    path = tmp_path / "system_report.json"
    write_system_report(path, report={"matmul": {"gflops": 1.0}})
    write_system_report(path, report=REPORT)
    assert load_system_report(path) == REPORT
    assert leftovers(tmp_path) == []


def test_write_system_report_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "system_report.json"
    write_system_report(path, report=REPORT)
    before = path.read_bytes()
    with pytest.raises(TypeError):          # a set is not JSON: the write fails half way
        write_system_report(path, report={"ok": True, "bad": {1, 2}})
    assert path.read_bytes() == before      # nothing half-written
    assert leftovers(tmp_path) == []        # and no temp file left behind


def test_load_system_report_of_missing_or_corrupt_file_is_none(tmp_path):
    assert load_system_report(tmp_path / "absent.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert load_system_report(bad) is None
    assert reference_gflops(bad) is None


def test_system_report_without_measuring_is_json_ready(tmp_path):
    report = system_report(measure=False)
    assert report["matmul"] is None
    assert [c["name"] for c in report["checks"]][:2] == ["Python", "NumPy"]
    path = write_system_report(tmp_path / "r.json", report=report)
    assert load_system_report(path) == json.loads(json.dumps(report))
