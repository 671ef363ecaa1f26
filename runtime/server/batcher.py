"""Dynamic batching: one inference thread owns the session, and requests from many clients share its runs.

Requests queue as whole jobs. Each step the thread takes waiting jobs in arrival order up to a token window,
tokenises them, and plans the step's session runs with ``Encoder.batch_plan`` (the library's own rules: longest
first, at most ``batch_size`` rows and the device's tokens per run). Before each run it drops the rows of jobs whose
client has gone; a job's future resolves as soon as its last row is embedded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from runtime.encoder import TOKENS_PER_RUN, Encoder
from runtime.server.metrics import Metrics

log = logging.getLogger("uvicorn.error")

WINDOW_RUNS = 4  # a step takes jobs up to this many full runs of tokens (at least one job)
# The inference thread runs at a lower CPU priority than the event loop, so on a busy core health checks, 429s and
# responses are not queued behind session runs; it still gets every cycle the event loop leaves.
INFERENCE_NICE = 10


class InputTooLong(ValueError):
    """An input exceeded max_seq_length tokens while the request asked not to truncate."""

    def __init__(self, index: int, limit: int) -> None:
        super().__init__(f"input {index} is longer than {limit} tokens and truncate is false")
        self.index = index


@dataclass(eq=False)
class Job:
    """One request's inputs on their way through the inference thread; results land in ``out``."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    count: int
    texts: list[str] | None = None
    ids: list[list[int]] | None = None
    truncate: bool = True
    cancelled: bool = False
    out: np.ndarray | None = None
    tokens: int = 0
    remaining: int = 0
    enqueued: float = field(default_factory=time.perf_counter)
    tokenize_s: float = 0.0
    first_run: float | None = None
    finished: float | None = None


class Batcher:
    """The inference thread and its queue; ``submit`` from the event loop, await ``job.future``."""

    def __init__(self, encoder: Encoder, metrics: Metrics, batch_size: int = 32) -> None:
        self._encoder = encoder
        self._metrics = metrics
        self._batch_size = batch_size
        self._window_tokens = WINDOW_RUNS * TOKENS_PER_RUN[encoder.device]
        self._dimension = encoder.get_sentence_embedding_dimension()
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._closing = False
        self._queued = 0
        self._thread = threading.Thread(target=self._work, name="embed-inference", daemon=True)
        metrics.queue_inputs.set_function(lambda: self._queued)

    def start(self) -> None:
        """Start the inference thread."""
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; its future resolves (or fails) from the inference thread."""
        with self._cond:
            if self._closing:
                raise RuntimeError("batcher is closed")
            self._waiting.append(job)
            self._queued += job.count
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _work(self) -> None:
        _lower_priority(INFERENCE_NICE)
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if not self._waiting:
                    return
                jobs = self._take()
            try:
                self._step(jobs)
            except Exception as err:  # a session failure fails this step's requests, never the thread
                log.exception("inference step failed")
                for job in jobs:
                    _resolve(job, err)

    def _take(self) -> list[Job]:
        """Waiting jobs in arrival order, up to the token window (estimated from text length before tokenising)."""
        jobs: list[Job] = []
        budget = self._window_tokens
        while self._waiting and (not jobs or budget > 0):
            job = self._waiting.popleft()
            jobs.append(job)
            self._queued -= job.count
            budget -= _estimate_tokens(job)
        return jobs

    def _step(self, jobs: list[Job]) -> None:
        rows: list[list[int]] = []
        owners: list[tuple[Job, int]] = []
        for job in jobs:
            if job.cancelled:
                self._metrics.dropped.inc(job.count)
                continue
            if not self._prepare(job):
                continue
            assert job.ids is not None
            rows.extend(job.ids)
            owners.extend((job, i) for i in range(job.count))
        for planned in self._encoder.batch_plan(rows, self._batch_size):
            live = [r for r in planned if not owners[r][0].cancelled]
            if len(live) < len(planned):
                self._metrics.dropped.inc(len(planned) - len(live))
            if live:
                self._run(live, rows, owners)

    def _prepare(self, job: Job) -> bool:
        """Tokenise a text job and allocate its output; False (future failed) if it may not be truncated."""
        if job.texts is not None:
            start = time.perf_counter()
            job.ids, truncated = self._encoder.tokenize_with_truncation(job.texts)
            job.tokenize_s = time.perf_counter() - start
            self._metrics.tokenize_seconds.observe(job.tokenize_s)
            if not job.truncate and any(truncated):
                _resolve(job, InputTooLong(truncated.index(True), self._encoder.max_seq_length))
                return False
        assert job.ids is not None
        job.tokens = sum(map(len, job.ids))
        job.out = np.empty((job.count, self._dimension), dtype=np.float32)
        job.remaining = job.count
        return True

    def _run(self, live: list[int], rows: list[list[int]], owners: list[tuple[Job, int]]) -> None:
        batch = [rows[r] for r in live]
        start = time.perf_counter()
        for r in live:
            job = owners[r][0]
            if job.first_run is None:
                job.first_run = start
                self._metrics.queue_seconds.observe(start - job.enqueued)
        emb = self._encoder.embed_ids(batch, normalize_embeddings=False)
        end = time.perf_counter()
        self._metrics.run_seconds.observe(end - start)
        self._metrics.batch_inputs.observe(len(batch))
        self._metrics.batch_tokens.observe(len(batch) * max(map(len, batch)))
        self._metrics.inputs.inc(len(batch))
        self._metrics.tokens.inc(sum(map(len, batch)))
        for r, vector in zip(live, emb, strict=True):
            job, i = owners[r]
            assert job.out is not None
            job.out[i] = vector
            job.remaining -= 1
            if job.remaining == 0:
                job.finished = end
                _resolve(job, None)


def _lower_priority(nice: int) -> None:
    """Raise this thread's nice value (Linux: nice is per thread); elsewhere, or without permission, do nothing."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):
        log.warning("could not lower the inference thread's priority")


def _estimate_tokens(job: Job) -> int:
    """Tokens a job will take, before tokenising: about 4 characters a token, [CLS]/[SEP] added, capped per input."""
    if job.ids is not None:
        return sum(map(len, job.ids))
    assert job.texts is not None
    return sum(min(len(t) // 4 + 2, 256) for t in job.texts)


def _resolve(job: Job, error: BaseException | None) -> None:
    job.loop.call_soon_threadsafe(_settle, job.future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the request was abandoned
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
