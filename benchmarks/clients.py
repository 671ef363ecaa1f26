"""Plain clients, written as a user of each library would write them, as a check on ``loadgen``'s figures.

``concurrency`` tasks each send one request after another (``batch`` STS-B dev sentences, base64, as the openai
client asks) and decode every answer, for ``warmup_s + duration_s``; requests finished in the last ``duration_s``
count. aiohttp is the independent client ``serve_bench`` runs beside ``loadgen``; httpx and the ``openai`` client
are the other common ones.

    python -m benchmarks.clients --url http://127.0.0.1:8000 --client aiohttp --concurrency 64 --batch 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from benchmarks.stats import percentile

CLIENTS = ("aiohttp", "httpx", "openai")


async def _closed_loop(
    call: Callable[[list[str]], Awaitable[int]],
    texts: Sequence[str],
    concurrency: int,
    batch: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    start = time.perf_counter()
    counted_from, stop = start + warmup_s, start + warmup_s + duration_s
    done = vectors = 0
    errors: dict[str, int] = {}
    latencies: list[float] = []

    async def worker(k: int) -> None:
        nonlocal done, vectors
        i = k
        while time.perf_counter() < stop:
            chunk = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
            sent = time.perf_counter()
            try:
                got = await call(chunk)
            except Exception as err:  # counted by type; a benchmark reports failures rather than stopping
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
            else:
                end = time.perf_counter()
                if counted_from <= end < stop:
                    done += 1
                    vectors += got
                    latencies.append(end - sent)
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    ms = [seconds * 1000 for seconds in latencies]
    return {
        "requests": done,
        "requests_per_s": round(done / duration_s, 2),
        "inputs_per_s": round(vectors / duration_s, 2),
        "p50_ms": percentile(ms, 50, 3),
        "p99_ms": percentile(ms, 99, 3),
        "errors": errors,
    }


async def run_async(
    client: str,
    base_url: str,
    texts: Sequence[str],
    concurrency: int = 64,
    batch: int = 1,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
) -> dict[str, Any]:
    """Closed loop of ``client`` against ``base_url`` (``http://host:port``); its throughput and latencies."""
    url = base_url.rstrip("/") + "/v1/embeddings"
    if client == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def call(chunk: list[str]) -> int:
                async with session.post(url, json={"input": chunk, "encoding_format": "base64"}) as response:
                    response.raise_for_status()
                    body = await response.json()
                return len([base64.b64decode(d["embedding"]) for d in body["data"]])

            result = await _closed_loop(call, texts, concurrency, batch, duration_s, warmup_s)
    elif client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:

            async def call(chunk: list[str]) -> int:
                response = await http.post(url, json={"input": chunk, "encoding_format": "base64"})
                response.raise_for_status()
                return len([base64.b64decode(d["embedding"]) for d in response.json()["data"]])

            result = await _closed_loop(call, texts, concurrency, batch, duration_s, warmup_s)
    elif client == "openai":
        import httpx
        import openai

        http_client = openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=concurrency))
        api = openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="unused", http_client=http_client)
        async with api:
            model = (await api.models.list()).data[0].id

            async def call(chunk: list[str]) -> int:
                reply = await api.embeddings.create(input=chunk, model=model)  # base64, decoded by the client
                return len(reply.data)

            result = await _closed_loop(call, texts, concurrency, batch, duration_s, warmup_s)
    else:
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    return {"client": client, "concurrency": concurrency, "batch": batch, "duration_s": duration_s, **result}


def run(client: str, base_url: str, texts: Sequence[str], **kw: Any) -> dict[str, Any]:
    """``run_async`` on a fresh asyncio event loop (the client libraries' default loop, no uvloop)."""
    return asyncio.run(run_async(client, base_url, texts, **kw))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--client", choices=CLIENTS, default="aiohttp")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    from export.data import dev_sentences

    report = run(
        args.client,
        args.url,
        dev_sentences(),
        concurrency=args.concurrency,
        batch=args.batch,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
