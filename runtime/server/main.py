"""``python -m runtime serve``: load and warm the model, then serve it with uvicorn until SIGTERM drains it."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
import time
from types import FrameType

import uvicorn

import runtime
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


def serve(args: argparse.Namespace) -> None:
    """Load the model, warm it, and serve until a signal drains the server."""
    settings = settings_from_args(args)
    encoder = runtime.load(
        args.model, provider=args.provider, precision=args.precision, threads=settings.threads, backend=args.backend
    )
    warm_up(encoder)
    service = Service(encoder, settings)
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
    print(
        f"serving {service.model_name} ({encoder.backend}, {encoder.device}, {encoder.precision.value})",
        file=sys.stderr,
        flush=True,
    )
    DrainingServer(config, service).run()
