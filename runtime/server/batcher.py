"""Dynamic batching: inference workers, each a thread owning its own session, share one queue of requests.

Requests queue as whole jobs. Before each session run a worker moves waiting jobs, in arrival order, into its pool
of tokenised rows while the pool holds under a token window (only its share of the queue while other workers are
idle), plans the pool with the encoder's planner (``runtime.batching.plan_runs``: rows longest first, cut into runs of
at most ``batch_size`` rows and the device's tokens per run so that the padded tokens plus a per-run overhead are
fewest, never across the encoder's engine boundaries) and runs the planned run that holds its oldest row. Rows of
jobs whose client has gone are dropped before they run; a job's future resolves as soon as its last row is embedded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.batching import TOKENS_PER_RUN, renormalize
from runtime.encoder import Encoder
from runtime.server.metrics import Metrics

log = logging.getLogger("uvicorn.error")

WINDOW_RUNS = 4  # a worker's pool takes jobs up to this many full runs of tokens (at least one job)
# Inference threads run at a lower CPU priority than the event loop, so on a busy core health checks, 429s and
# responses are not queued behind session runs; they still get every cycle the event loop leaves.
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
    normalize: bool = False  # out holds unit vectors, renormalised exactly as encode(normalize_embeddings=True)
    cancelled: bool = False
    failed: bool = False  # set by the worker once it failed the future
    out: np.ndarray | None = None
    tokens: int = 0
    estimate: int = 0  # tokens, estimated at submission
    remaining: int = 0
    enqueued: float = field(default_factory=time.perf_counter)
    tokenize_s: float = 0.0
    first_run: float | None = None
    finished: float | None = None


class Batcher:
    """The inference workers and their shared queue; ``submit`` from the event loop, await ``job.future``.

    Each worker is a thread with its own encoder (session), pinned to its CPUs when given; they take jobs from the
    one queue, so N workers serve one port and one admission bound.
    """

    def __init__(
        self,
        encoders: Encoder | Sequence[Encoder],
        metrics: Metrics,
        batch_size: int = 32,
        cpus: Sequence[set[int] | None] | None = None,
    ) -> None:
        self._encoders = [encoders] if isinstance(encoders, Encoder) else list(encoders)
        if not self._encoders:
            raise ValueError("a batcher needs at least one encoder")
        self._cpus = list(cpus) if cpus is not None else [None] * len(self._encoders)
        if len(self._cpus) != len(self._encoders):
            raise ValueError(f"{len(self._cpus)} CPU sets for {len(self._encoders)} workers")
        first = self._encoders[0]
        self._metrics = metrics
        self._batch_size = batch_size
        self._run_tokens = TOKENS_PER_RUN[first.device]
        self._window_tokens = WINDOW_RUNS * self._run_tokens
        self._dimension = first.get_sentence_embedding_dimension()
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._closing = False
        self._queued = 0
        self._queued_tokens = 0  # estimated tokens of the waiting jobs
        self._idle = 0  # workers waiting for jobs
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"embed-inference-{i}", daemon=True)
            for i in range(len(self._encoders))
        ]
        self._pooled = [0] * len(self._encoders)  # rows in each worker's pool, tokenised and waiting for a run
        metrics.queue_inputs.set_function(lambda: self._queued + sum(self._pooled))
        for i in range(len(self._encoders)):
            metrics.worker_busy_seconds.labels(str(i))  # listed at 0 before a worker's first step

    @property
    def workers(self) -> int:
        """Number of inference workers."""
        return len(self._encoders)

    def start(self) -> None:
        """Start the inference threads."""
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; its future resolves (or fails) from an inference thread."""
        job.estimate = _estimate_tokens(job)
        with self._cond:
            if self._closing:
                raise RuntimeError("batcher is closed")
            self._waiting.append(job)
            self._queued += job.count
            self._queued_tokens += job.estimate
            if self._idle:
                self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the threads (waiting at most ``timeout`` in all)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _work(self, index: int) -> None:
        encoder, cpus = self._encoders[index], self._cpus[index]
        busy = self._metrics.worker_busy_seconds.labels(str(index))
        if cpus:
            _pin(cpus)
        _lower_priority(INFERENCE_NICE)
        pending: list[tuple[Job, int]] = []  # this worker's tokenised rows, oldest first: (job, row)
        pending_tokens = 0
        while True:
            with self._cond:
                while not self._waiting and not pending and not self._closing:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._waiting and not pending:
                    return
                room = self._window_tokens - pending_tokens
                jobs = self._take(room) if self._waiting and (room > 0 or not pending) else []
                if self._waiting and self._idle:
                    self._cond.notify()  # work left over: wake another worker
            start = time.perf_counter()
            try:
                for job in jobs:
                    if job.cancelled:
                        self._metrics.dropped.inc(job.count)
                    elif self._prepare(encoder, job):
                        pending.extend((job, i) for i in range(job.count))
                        pending_tokens += job.tokens
                live = [row for row in pending if not row[0].cancelled and not row[0].failed]
                if len(live) < len(pending):
                    self._metrics.dropped.inc(sum(not row[0].failed for row in pending) - len(live))
                    pending = live
                self._pooled[index] = len(pending)
                if pending:
                    run = self._next_run(encoder, pending)
                    chosen = set(run)
                    batch = [pending[r] for r in run]
                    pending = [row for r, row in enumerate(pending) if r not in chosen]
                    pending_tokens -= sum(len(_ids(job)[i]) for job, i in batch)
                    self._pooled[index] = len(pending)
                    self._run(encoder, batch)
            except Exception as err:  # a session failure fails the requests it touched, never the thread
                log.exception("inference run failed")
                failed = {job for job in jobs} | {job for job, _ in pending}
                for job in failed:
                    job.failed = True
                    _resolve(job, err)
                pending, pending_tokens = [], 0
                self._pooled[index] = 0
            busy.inc(time.perf_counter() - start)

    def _take(self, room: int) -> list[Job]:
        """Waiting jobs in arrival order, up to ``room`` tokens (estimated from text length before tokenising; at
        least one job); while other workers are idle, up to this worker's share of what waits, so they get work
        too."""
        jobs: list[Job] = []
        budget = room
        if self._idle:
            budget = min(budget, -(-self._queued_tokens // (self._idle + 1)))
        while self._waiting and (not jobs or budget > 0):
            job = self._waiting.popleft()
            jobs.append(job)
            self._queued -= job.count
            self._queued_tokens -= job.estimate
            budget -= job.estimate
        return jobs

    def _next_run(self, encoder: Encoder, pending: list[tuple[Job, int]]) -> list[int]:
        """The planned run over all pending rows that holds the oldest one: no row waits behind rows that came after
        it for ever, and each run is cut as if the whole pool were planned."""
        for run in encoder.batch_plan([_ids(job)[i] for job, i in pending], self._batch_size):
            if 0 in run:
                return run
        raise AssertionError("the plan left out a row")

    def _prepare(self, encoder: Encoder, job: Job) -> bool:
        """Tokenise a text job and allocate its output; False (future failed) if it may not be truncated."""
        if job.texts is not None:
            start = time.perf_counter()
            job.ids, truncated = encoder.tokenize_with_truncation(job.texts)
            job.tokenize_s = time.perf_counter() - start
            self._metrics.tokenize_seconds.observe(job.tokenize_s)
            if not job.truncate and any(truncated):
                _resolve(job, InputTooLong(truncated.index(True), encoder.max_seq_length))
                return False
        assert job.ids is not None
        job.tokens = sum(map(len, job.ids))
        job.out = np.empty((job.count, self._dimension), dtype=np.float32)
        job.remaining = job.count
        return True

    def _run(self, encoder: Encoder, rows: list[tuple[Job, int]]) -> None:
        batch = [_ids(job)[i] for job, i in rows]
        start = time.perf_counter()
        for job, _ in rows:
            if job.first_run is None:
                job.first_run = start
                self._metrics.queue_seconds.observe(start - job.enqueued)
        emb = encoder.embed_ids(batch, normalize_embeddings=False)
        end = time.perf_counter()
        self._metrics.run_seconds.observe(end - start)
        self._metrics.batch_inputs.observe(len(batch))
        self._metrics.batch_tokens.observe(len(batch) * max(map(len, batch)))
        self._metrics.inputs.inc(len(batch))
        self._metrics.tokens.inc(sum(map(len, batch)))
        # Renormalised here, once per run, rather than per request on the event loop's thread; per row it is the
        # very computation encode() makes over its whole output.
        unit = renormalize(emb.copy())
        finished = []
        for (job, i), raw, vector in zip(rows, emb, unit, strict=True):
            assert job.out is not None
            job.out[i] = vector if job.normalize else raw
            job.remaining -= 1
            if job.remaining == 0:
                job.finished = end
                finished.append(job)
        _resolve_all(finished)


def _pin(cpus: set[int]) -> None:
    """Hold this thread (Linux: affinity is per thread) to ``cpus``; elsewhere, or when refused, run anywhere."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError) as err:
        log.warning("could not pin an inference thread to CPUs %s: %s", sorted(cpus), err)


def _ids(job: Job) -> list[list[int]]:
    assert job.ids is not None
    return job.ids


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


def _resolve_all(jobs: list[Job]) -> None:
    """Resolve finished jobs with one wake-up of each event loop they came from, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job.future)
    for loop, futures in by_loop.items():
        loop.call_soon_threadsafe(_settle_all, futures)


def _settle_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # else the request was abandoned
            future.set_result(None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the request was abandoned
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
