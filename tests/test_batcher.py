"""The server's run planner and its inference workers, in process (no HTTP)."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

import runtime
from export.data import dev_sentences

pytest.importorskip("uvicorn", reason="needs the 'serve' extra")
pytest.importorskip("prometheus_client", reason="needs the 'serve' extra")

from runtime.server import main as server_main
from runtime.server.batcher import Batcher, Job
from runtime.server.metrics import Metrics


def _submit_all(batcher: Batcher, requests: list[list[str]]) -> list[Job]:
    async def scenario() -> list[Job]:
        loop = asyncio.get_running_loop()
        jobs = [Job(loop, loop.create_future(), len(texts), texts=texts) for texts in requests]
        for job in jobs:
            batcher.submit(job)
        await asyncio.gather(*(job.future for job in jobs))
        return jobs

    return asyncio.run(scenario())


def test_two_workers_share_the_queue_and_match_the_library(encoder: runtime.Encoder) -> None:
    second = runtime.load(provider="cpu", threads=1, backend="onnxruntime")
    metrics = Metrics()
    batcher = Batcher([encoder, second], metrics, batch_size=32)
    batcher.start()
    try:
        texts = dev_sentences()[:512]
        # Requests of 64 texts: each step takes at most its share while the other worker is idle.
        requests = [texts[i : i + 64] for i in range(0, 512, 64)]
        jobs = _submit_all(batcher, requests)
    finally:
        batcher.close(60)
    got = np.concatenate([job.out for job in jobs if job.out is not None])
    want = encoder.encode(texts, normalize_embeddings=False)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6
    busy = [metrics.worker_busy_seconds.labels(str(i))._value.get() for i in range(2)]
    assert all(b > 0 for b in busy), busy  # both workers ran steps
    assert not any(t.is_alive() for t in batcher._threads)  # close() stopped every worker


def test_workers_pin_themselves_to_their_cpus(encoder: runtime.Encoder) -> None:
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs and Linux affinity")
    first, second = sorted(os.sched_getaffinity(0))[:2]
    seen: dict[int, set[int]] = {}
    batcher = Batcher([encoder, encoder], Metrics(), cpus=[{first}, {second}])
    original = batcher._run

    def spy(enc: runtime.Encoder, rows: list[tuple[Job, int]]) -> None:
        seen[threading.get_native_id()] = os.sched_getaffinity(0)
        original(enc, rows)

    batcher._run = spy  # type: ignore[method-assign]
    batcher.start()
    try:
        for _ in range(20):
            _submit_all(batcher, [["a text"] * 200, ["another text"] * 200])
            if len(seen) == 2:
                break
    finally:
        batcher.close(60)
    assert sorted(map(sorted, seen.values())) == [[first], [second]]
    assert os.sched_getaffinity(0) >= {first, second}  # the event loop's thread is left alone


@pytest.mark.parametrize(
    ("workers", "threads", "usable", "cores", "expected"),
    [
        (None, None, 4, 4, (4, 1, [{0}, {1}, {2}, {3}])),  # default: a single-threaded worker per core
        (None, 2, 4, 4, (2, 2, [{0, 1}, {2, 3}])),  # --threads divides the cores into workers
        (2, None, 4, 4, (2, 2, [{0, 1}, {2, 3}])),  # --workers divides them into threads
        (None, None, 2, 4, (2, 1, [{0}, {1}])),  # a cgroup quota of 2 CPUs on 4 cores: 2 workers
        (3, 2, 4, 4, (3, 2, [None, None, None])),  # more than the cores: no pinning
        (None, 8, 2, 2, (1, 8, [None])),
    ],
)
def test_worker_layout(
    monkeypatch: pytest.MonkeyPatch,
    workers: int | None,
    threads: int | None,
    usable: int,
    cores: int,
    expected: tuple[int, int, list[set[int] | None]],
) -> None:
    monkeypatch.setattr(server_main, "usable_cores", lambda: usable)
    monkeypatch.setattr(server_main, "core_groups", lambda: [[c] for c in range(cores)])
    assert server_main.worker_layout(workers, threads) == expected


def test_worker_layout_keeps_smt_siblings_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_main, "usable_cores", lambda: 2)
    monkeypatch.setattr(server_main, "core_groups", lambda: [[0, 2], [1, 3]])
    assert server_main.worker_layout(None, None) == (2, 1, [{0, 2}, {1, 3}])


def test_next_run_is_the_planned_run_holding_the_oldest_row(encoder: runtime.Encoder) -> None:
    # A pool in arrival order: a short row first, then long ones and more short ones. The plan runs the long rows
    # apart from the short ones; the run that goes next must be the one with the oldest row, or a stream of long
    # requests would keep the first short one waiting.
    batcher = Batcher(encoder, Metrics())
    lengths = [5, 60, 60, 60, 5, 5]
    loop = asyncio.new_event_loop()
    job = Job(loop, loop.create_future(), len(lengths), ids=[[101] * n for n in lengths])
    loop.close()
    pool = [(job, i) for i in range(len(lengths))]
    assert sorted(batcher._next_run(encoder, pool)) == [0, 4, 5]
    assert sorted(batcher._next_run(encoder, pool[1:])) == [0, 1, 2]  # once it ran, the long rows are the oldest
