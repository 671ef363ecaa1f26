"""``python -m runtime serve``: load and warm the model, then serve it with uvicorn until SIGTERM drains it."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

import runtime
from runtime.cpu import core_groups, usable_cores
from runtime.server.app import Service
from runtime.server.options import settings_from_args

log = logging.getLogger("uvicorn.error")


DRAIN_QUIET_S = 0.5  # the drain ends once nothing is in flight and no request arrived for this long


class DrainingServer(uvicorn.Server):
    """uvicorn, plus a drain: the first SIGTERM/SIGINT turns /health to 503 while requests are still served, so a
    load balancer stops routing here and requests already on their way are answered; once nothing is in flight and
    none arrived for DRAIN_QUIET_S (or after the graceful timeout), uvicorn stops listening, finishes the requests
    it holds, and the process exits with status 0. A second signal stops at once, as plain uvicorn does."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self._deadline = float("inf")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining:
            super().handle_exit(sig, frame)
            return
        log.info("%s: draining %d inputs in flight", signal.Signals(sig).name, self.service.inflight)
        self.service.draining = True
        self._deadline = time.monotonic() + self.service.settings.graceful_timeout

    async def on_tick(self, counter: int) -> bool:
        service = self.service
        now = time.monotonic()
        idle = service.inflight == 0 and now - service.last_arrival >= DRAIN_QUIET_S
        if service.draining and (idle or now > self._deadline):
            self.should_exit = True
        return await super().on_tick(counter)


def warm_up(encoder: runtime.Encoder) -> None:
    """Run short and full-length batches once, so the first requests do not pay onnxruntime's first-run costs."""
    encoder.encode(["warm up the session"] * 32)
    encoder.encode([" ".join(["warm"] * 300)] * 4)


def worker_layout(workers: int | None, threads: int | None) -> tuple[int, int, list[set[int] | None]]:
    """Workers, intra-op threads per worker, and each worker's CPUs: ``threads`` whole physical cores of its own
    among those this process may run on, or None for all workers when there are not enough cores to go round.

    Defaults: one single-threaded worker per usable physical core (affinity and cgroup CPU quota); a given
    ``threads`` divides the usable cores into workers, a given ``workers`` divides them into threads."""
    usable = usable_cores()
    if workers is None:
        threads = threads or 1
        workers = max(1, usable // threads)
    elif threads is None:
        threads = max(1, usable // workers)
    groups = core_groups()
    if workers * threads > len(groups):
        return workers, threads, [None] * workers
    return workers, threads, [{c for g in groups[i * threads : (i + 1) * threads] for c in g} for i in range(workers)]


@contextlib.contextmanager
def _pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this thread held to ``cpus``: onnxruntime's intra-op threads, created with the session,
    keep the affinity of the thread that created them."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def serve(args: argparse.Namespace) -> None:
    """Load the model once per worker, warm each, and serve until a signal drains the server."""
    settings = settings_from_args(args)
    # Tokenisation runs on the workers, each on its own core; tokenizers' thread pool would pull it onto the cores
    # of whichever thread created the pool.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workers, threads, cpus = worker_layout(settings.workers, settings.threads)
    encoders = []
    for worker_cpus in cpus:
        with _pinned(worker_cpus):
            encoder = runtime.load(
                args.model, provider=args.provider, precision=args.precision, threads=threads, backend=args.backend
            )
            warm_up(encoder)
        encoders.append(encoder)
    encoder = encoders[0]
    service = Service(encoders, settings, cpus)
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes, which
    # otherwise walk it again and again on the event loop's thread.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        service,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="on",
        access_log=settings.access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.graceful_timeout),
        backlog=2048,
        server_header=False,
    )
    layout = ", ".join("any CPU" if c is None else f"CPUs {sorted(c)}" for c in cpus)
    print(
        f"serving {service.model_name} ({encoder.backend}, {encoder.device}, {encoder.precision.value}): "
        f"{workers} worker(s) x "
        f"{threads} thread(s), on {layout}",
        file=sys.stderr,
        flush=True,
    )
    DrainingServer(config, service).run()
