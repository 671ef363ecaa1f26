"""What a bench process records besides timing (``benchmarks.timing``): contention, peak memory, fidelity."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from export.data import cosines


class Contention:
    """CPU time that other processes used while this one measured: a busy neighbour shows up here, not in silence.

    Reads the machine's busy time from /proc/stat (Linux); elsewhere ``other_cpu_s`` returns None.
    """

    def __init__(self) -> None:
        self._start = (_machine_busy_s(), _own_cpu_s(), time.perf_counter())

    def result(self) -> dict[str, float | None]:
        busy, own, wall = self._start
        now_busy = _machine_busy_s()
        other = None if busy is None or now_busy is None else (now_busy - busy) - (_own_cpu_s() - own)
        return {"other_cpu_s": other, "wall_s": time.perf_counter() - wall}


def _machine_busy_s() -> float | None:
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def cosine_rows(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and minimum cosine between matching rows of two embedding matrices."""
    cos = cosines(a, b)
    return {"mean": float(cos.mean()), "min": float(cos.min())}
