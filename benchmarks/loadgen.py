"""HTTP load generator for embedding servers (asyncio + aiohttp).

Closed loop: ``concurrency`` clients, each sending its next request as soon as the last one answered. Open loop:
requests arrive as a Poisson process at ``rate`` per second whatever the server does, and each latency runs from
the request's scheduled time, so a server that falls behind is charged for the queue it causes (no coordinated
omission). Both report throughput, goodput, latency percentiles of answered requests and counts by status.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000/v1/embeddings --mode closed --concurrency 16 --batch 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import aiohttp
import numpy as np

from benchmarks.stats import percentile

OK = 200


@dataclass(frozen=True)
class Load:
    """What to send: pre-encoded JSON bodies (cycled), each carrying ``batch`` inputs."""

    url: str
    bodies: list[bytes]
    batch: int
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0


@dataclass
class Sample:
    """One request: when it was due and sent (perf_counter), its status (or error name) and latency."""

    due: float
    sent: float
    status: str
    latency_s: float


@dataclass
class Report:
    """The summary of one run."""

    mode: str
    concurrency: int | None
    rate: float | None
    batch: int
    duration_s: float
    requests: int
    by_status: dict[str, int]
    throughput_rps: float  # answered requests (any status) per second
    goodput_rps: float  # 200s per second
    inputs_per_s: float  # inputs embedded (200s x batch) per second
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    rejected_p50_ms: float | None  # 429s, from the actual send
    rejected_p99_ms: float | None
    rejected_max_ms: float | None
    send_lag_p99_ms: float | None  # open loop: how late the generator itself sent (its own saturation)


def payloads(
    texts: Sequence[str],
    batch: int,
    api: str = "openai",
    fmt: str = "base64",
    model: str | None = None,
    count: int | None = None,
) -> list[bytes]:
    """``count`` request bodies of ``batch`` consecutive texts each, cycling through ``texts``; by default enough
    bodies to send every text once, so a run's texts are the ones a baseline over ``texts`` embeds (the first 512
    STS-B dev sentences average 11.3 tokens, all 3,000 of them 16.2)."""
    if count is None:
        count = max(1, -(-len(texts) // batch))
    bodies = []
    for i in range(count):
        start = (i * batch) % len(texts)
        chunk = [texts[(start + j) % len(texts)] for j in range(batch)]
        if api == "tei":
            body: dict[str, object] = {"inputs": chunk}
        else:
            body = {"input": chunk, "encoding_format": fmt}
            if model:
                body["model"] = model
        bodies.append(json.dumps(body).encode())
    return bodies


async def send(session: aiohttp.ClientSession, load: Load, body: bytes, due: float, samples: list[Sample]) -> None:
    sent = time.perf_counter()
    try:
        async with session.post(load.url, data=body, headers=load.headers) as response:
            await response.read()
            status = str(response.status)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
        status = type(err).__name__
    samples.append(Sample(due=due, sent=sent, status=status, latency_s=time.perf_counter() - due))


def client_session(load: Load, connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=load.timeout_s)
    headers = {"content-type": "application/json", **load.headers}
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers, skip_auto_headers=["User-Agent"]
    )


async def closed_loop(load: Load, concurrency: int, duration_s: float, warmup_s: float = 2.0) -> Report:
    """``concurrency`` clients back to back for ``warmup_s + duration_s``; only the last ``duration_s`` counts."""
    samples: list[Sample] = []
    async with client_session(load, concurrency) as session:
        start = time.perf_counter()
        stop = start + warmup_s + duration_s

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                await send(session, load, load.bodies[i % len(load.bodies)], time.perf_counter(), samples)
                i += concurrency

        await asyncio.gather(*(client(k) for k in range(concurrency)))
    counted = [s for s in samples if s.due >= start + warmup_s and s.due < stop]
    return summarize(counted, "closed", concurrency, None, load.batch, duration_s)


async def open_loop(
    load: Load, rate: float, duration_s: float, warmup_s: float = 2.0, seed: int = 0, max_connections: int = 2048
) -> Report:
    """Poisson arrivals at ``rate``/s for ``warmup_s + duration_s``; only requests due in the last ``duration_s``."""
    samples: list[Sample] = []
    rng = random.Random(seed)
    tasks: set[asyncio.Task[None]] = set()
    async with client_session(load, max_connections) as session:
        start = time.perf_counter()
        stop = start + warmup_s + duration_s
        due = start
        i = 0
        while True:
            due += rng.expovariate(rate)
            if due >= stop:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(session, load, load.bodies[i % len(load.bodies)], due, samples))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks)
    counted = [s for s in samples if s.due >= start + warmup_s]
    return summarize(counted, "open", None, rate, load.batch, duration_s)


def summarize(
    samples: list[Sample], mode: str, concurrency: int | None, rate: float | None, batch: int, duration_s: float
) -> Report:
    """Counts, rates and percentiles of a run's samples."""
    by_status = Counter(s.status for s in samples)
    ok = np.array([s.latency_s for s in samples if s.status == str(OK)]) * 1000
    # a 429's time is the server's answer time, from the actual send: the rejection bar is about the server
    rejected = np.array([s.latency_s - (s.sent - s.due) for s in samples if s.status == "429"]) * 1000
    lag = np.array([s.sent - s.due for s in samples]) * 1000

    return Report(
        mode=mode,
        concurrency=concurrency,
        rate=rate,
        batch=batch,
        duration_s=duration_s,
        requests=len(samples),
        by_status=dict(sorted(by_status.items())),
        throughput_rps=round(len(samples) / duration_s, 2),
        goodput_rps=round(len(ok) / duration_s, 2),
        inputs_per_s=round(len(ok) * batch / duration_s, 2),
        p50_ms=percentile(ok, 50, 3),
        p90_ms=percentile(ok, 90, 3),
        p99_ms=percentile(ok, 99, 3),
        max_ms=percentile(ok, 100, 3),
        rejected_p50_ms=percentile(rejected, 50, 3),
        rejected_p99_ms=percentile(rejected, 99, 3),
        rejected_max_ms=percentile(rejected, 100, 3),
        send_lag_p99_ms=percentile(lag, 99, 3) if mode == "open" else None,
    )


def run(load: Load, mode: str, concurrency: int, rate: float, duration_s: float, warmup_s: float) -> Report:
    """Run one closed- or open-loop measurement on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if mode == "closed":
        return runner(closed_loop(load, concurrency, duration_s, warmup_s))
    return runner(open_loop(load, rate, duration_s, warmup_s))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="endpoint, e.g. http://127.0.0.1:8000/v1/embeddings")
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: clients")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests per second")
    parser.add_argument("--batch", type=int, default=1, help="inputs per request")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (after --warmup)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--api", choices=["openai", "tei"], default="openai")
    parser.add_argument("--format", choices=["base64", "float"], default="base64", help="openai encoding_format")
    parser.add_argument("--model", default=None, help="model name to send (openai api)")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    from export.data import dev_sentences

    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    load = Load(args.url, payloads(dev_sentences(), args.batch, args.api, args.format, args.model), args.batch, headers)
    report = run(load, args.mode, args.concurrency, args.rate, args.duration, args.warmup)
    json.dump(asdict(report), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
