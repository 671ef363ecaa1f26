"""Readings of processes: resident memory now and at its peak, the CPUs their threads may run on, and the machine's
load average.

Memory comes from psutil (maintained, cross-platform readings instead of /proc parsed by hand), except the peak:
psutil has none on Linux, and ``getrusage``'s ``ru_maxrss`` is no substitute there, because the kernel carries a
parent's peak over into a child at exec (a child of a 400 MiB process reports at least 400 MiB). The peak is read
from the kernel's own counter for this process, VmHWM, where /proc has it.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import psutil

MIB = 2**20
STATUS = Path("/proc/self/status")


def rss_mib(pid: int | None = None, descendants: bool = False) -> float:
    """Resident memory of process ``pid`` (default: this one) now, in MiB; with ``descendants``, summed with its
    children's, their children's and so on (one that exits while being read counts as 0)."""
    total = 0
    for process in _tree(pid, descendants):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / MIB


def _tree(pid: int | None, descendants: bool) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)] if descendants else [root]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB: VmHWM on Linux, ``ru_maxrss`` elsewhere."""
    if STATUS.exists():
        for line in STATUS.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def loadavg() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return [round(load, 2) for load in os.getloadavg()]


def thread_affinities(pid: int, descendants: bool = False) -> list[set[int]]:
    """The CPUs each thread of process ``pid`` (and, with ``descendants``, of its descendants) may run on, one set per
    thread (Linux); threads that end while being read are left out."""
    found = []
    for process in _tree(pid, descendants):
        try:
            threads = process.threads()
        except psutil.NoSuchProcess:
            continue
        for thread in threads:
            try:
                found.append(os.sched_getaffinity(thread.id))
            except ProcessLookupError:
                continue
    return found
