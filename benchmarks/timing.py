"""Timing of an embed function: throughput over a text set and single-text latency.

Shared by the CPU benchmark (``benchmarks.worker``) and the one-shot GPU run (``benchmarks.gpu``). ``sync`` waits for
work a device still has queued (``torch.cuda.synchronize``) before each clock read; on the CPU it does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Embed = Callable[[list[str], int], np.ndarray]
"""``embed(texts, batch_size) -> (len(texts), dim)``, the system's own batching."""
WARMUP_CALLS = 3


def no_sync() -> None:
    """Nothing to wait for (CPU systems)."""


@dataclass(frozen=True)
class Throughput:
    """The fastest of the timed passes over ``texts``; its embeddings are kept for accuracy checks."""

    sentences_per_s: float
    seconds: float
    embeddings: np.ndarray


def timed(
    embed: Embed, texts: list[str], batch_size: int, passes: int = 1, sync: Callable[[], None] = no_sync
) -> Throughput:
    """Embed ``texts`` ``passes`` times at ``batch_size`` after a warm-up on the first batches; keep the fastest."""
    if passes < 1 or not texts:
        raise ValueError(f"need at least one pass over at least one text, got {passes} passes over {len(texts)} texts")
    embed(texts[: max(2 * batch_size, 8)], batch_size)
    sync()
    best: Throughput | None = None
    for _ in range(passes):
        start = time.perf_counter()
        embeddings = embed(texts, batch_size)
        sync()
        seconds = time.perf_counter() - start
        if embeddings.shape[0] != len(texts):
            raise RuntimeError(f"embed returned {embeddings.shape[0]} rows for {len(texts)} texts")
        if best is None or seconds < best.seconds:
            best = Throughput(sentences_per_s=len(texts) / seconds, seconds=seconds, embeddings=embeddings)
    assert best is not None
    return best


def throughput(
    embed: Embed, texts: list[str], batch_size: int, sync: Callable[[], None] = no_sync, passes: int = 2
) -> float:
    """Texts per second over ``texts`` at ``batch_size``: the best of ``passes`` passes after a warm-up."""
    return timed(embed, texts, batch_size, passes, sync).sentences_per_s


def latency_ms(embed: Embed, texts: list[str], calls: int, sync: Callable[[], None] = no_sync) -> dict[str, float]:
    """p50/p99/mean milliseconds of ``calls`` single-text calls cycling through ``texts``, after a short warm-up."""
    if calls < 2 or not texts:
        raise ValueError(f"need at least 2 calls and one text, got {calls} calls and {len(texts)} texts")
    for text in texts[:WARMUP_CALLS]:
        embed([text], 1)
    sync()
    ms = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        embed([texts[i % len(texts)]], 1)
        sync()
        ms[i] = (time.perf_counter() - start) * 1e3
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "calls": calls,
    }
