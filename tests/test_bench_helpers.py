"""benchmarks.procs and benchmarks.stats: the process readings and the percentile every benchmark and study shares."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psutil", reason="needs the 'bench' extra")

from benchmarks.procs import loadavg, peak_rss_mib, rss_mib, thread_affinities
from benchmarks.stats import percentile

REPO = Path(__file__).resolve().parents[1]
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: VmHWM, thread affinities")
HOLD = 64  # MiB a child touches and keeps


def test_percentile_interpolates_rounds_and_has_none_for_no_values() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile(np.array([0.0, 1.0]), 99, 3) == 0.99
    assert percentile([1 / 3], 100, 3) == 0.333
    assert percentile([], 50) is None and percentile(np.array([]), 99, 3) is None


def test_loadavg_is_three_non_negative_numbers() -> None:
    found = loadavg()
    assert len(found) == 3 and all(isinstance(x, float) and x >= 0 for x in found)


@linux
def test_rss_sees_memory_touched_and_the_peak_is_never_below_it() -> None:
    before = rss_mib()
    held = np.ones(HOLD * 2**20, dtype=np.uint8)  # written, so resident
    now = rss_mib()
    assert now - before >= HOLD * 0.9 and held[-1] == 1
    assert peak_rss_mib() >= now * 0.99


@linux
def test_a_childs_peak_is_its_own_not_its_parents() -> None:
    # getrusage's ru_maxrss would report at least this process's peak (the 256 MiB held here) in the fresh
    # interpreter: the kernel carries it over at exec. VmHWM is the child's own, a bare interpreter's size.
    held = np.ones(4 * HOLD * 2**20, dtype=np.uint8)
    code = "from benchmarks.procs import peak_rss_mib; print(peak_rss_mib())"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert float(done.stdout) < 4 * HOLD * 0.5 < peak_rss_mib() and held[0] == 1


@linux
def test_rss_of_descendants_counts_a_childs_memory() -> None:
    code = f"import sys, numpy; x = numpy.ones({HOLD} * 2**20, dtype=numpy.uint8); print(flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "\n"  # the child holds its memory now
        alone, with_child = rss_mib(), rss_mib(os.getpid(), descendants=True)
        assert with_child - alone >= HOLD * 0.9
        assert rss_mib(child.pid) >= HOLD * 0.9
    finally:
        child.communicate("")


@linux
def test_thread_affinities_follow_a_pinned_child() -> None:
    cpu = min(os.sched_getaffinity(0))
    code = (
        "import sys, threading; threading.Thread(target=threading.Event().wait, daemon=True).start(); "
        "print(flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "\n"
        found = thread_affinities(child.pid)
        assert len(found) == 2 and all(cpus == {cpu} for cpus in found), found
        assert {cpu} in thread_affinities(os.getpid(), descendants=True)
    finally:
        child.communicate("")
