"""Timing of one loaded system: throughput over a text set, single-text latency, other processes' CPU time."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.peers import Embed
from benchmarks.stats import percentile
from export.data import cosines

WARMUP_CALLS = 3


@dataclass(frozen=True)
class Throughput:
    """One pass over ``texts`` at ``batch_size`` after a warm-up; the embeddings are kept for accuracy checks."""

    sentences_per_s: float
    seconds: float
    embeddings: np.ndarray


def throughput(embed: Embed, texts: list[str], batch_size: int) -> Throughput:
    """Embed ``texts`` once in the system's own batches, after warming up on the first batches."""
    embed(texts[: 2 * batch_size], batch_size)
    start = time.perf_counter()
    embeddings = embed(texts, batch_size)
    seconds = time.perf_counter() - start
    if embeddings.shape[0] != len(texts):
        raise RuntimeError(f"embed returned {embeddings.shape[0]} rows for {len(texts)} texts")
    return Throughput(sentences_per_s=len(texts) / seconds, seconds=seconds, embeddings=embeddings)


def latency_ms(embed: Embed, texts: list[str], calls: int) -> dict[str, float]:
    """p50/p99/mean milliseconds of ``calls`` single-text calls, cycling through ``texts``."""
    for text in texts[:WARMUP_CALLS]:
        embed([text], 1)
    times = np.empty(calls)
    for i in range(calls):
        text = texts[i % len(texts)]
        start = time.perf_counter()
        embed([text], 1)
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    return {
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "mean": float(ms.mean()),
        "calls": calls,
    }


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


def cosine_rows(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and minimum cosine between matching rows of two embedding matrices."""
    cos = cosines(a, b)
    return {"mean": float(cos.mean()), "min": float(cos.min())}
