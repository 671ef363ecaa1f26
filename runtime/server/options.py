"""Command-line options and limits of the server; standard library only, so the CLI can list them cheaply."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

MB = 1_000_000


@dataclass(frozen=True)
class Settings:
    """How the server listens, what it accepts and how it batches."""

    host: str = "127.0.0.1"
    port: int = 8000
    threads: int | None = None  # per worker; None: the usable cores / workers (1 when neither is given)
    workers: int | None = None  # None: as many as the usable physical cores (/ threads)
    api_key: str | None = None
    model_name: str | None = None  # None: the artifact's name
    max_payload_bytes: int = 2 * MB
    max_inputs_per_request: int = 2048
    max_inflight_inputs: int = 1024
    batch_size: int = 32
    graceful_timeout: float = 30.0
    access_log: bool = False
    log_level: str = "info"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options (``--model``, ``--provider``, ``--precision`` are the CLI's global ones)."""
    d = Settings()
    parser.add_argument("--host", default=d.host, help=f"address to listen on (default: {d.host})")
    parser.add_argument("--port", type=int, default=d.port, help=f"TCP port (default: {d.port}; 0 picks a free one)")
    parser.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="inference workers, each with its own session, pinned to cores of their own "
        "(default: one per physical core the process may use, cgroup CPU quota included, divided by --threads)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="intra-op threads per worker (default: the usable cores divided by --workers; 1 when neither is given)",
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (else 401)")
    parser.add_argument("--model-name", default=None, help="model name clients send and see (default: artifact's)")
    parser.add_argument("--max-payload-bytes", type=_positive, default=d.max_payload_bytes, help="larger body: 413")
    parser.add_argument(
        "--max-inputs-per-request", type=_positive, default=d.max_inputs_per_request, help="more inputs: 413"
    )
    parser.add_argument(
        "--max-inflight-inputs",
        type=_positive,
        default=d.max_inflight_inputs,
        help="inputs admitted and not yet answered; past it: 429 with Retry-After (lower it to bound latency)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=d.batch_size, help="rows per session run (tokens per run also cap it)"
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=d.graceful_timeout,
        help="seconds SIGTERM waits for admitted work before exiting anyway",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    parser.add_argument("--log-level", default=d.log_level, choices=["critical", "error", "warning", "info", "debug"])


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The Settings an argparse namespace of ``add_arguments`` describes."""
    return Settings(
        host=args.host,
        port=args.port,
        threads=args.threads,
        workers=args.workers,
        api_key=args.api_key,
        model_name=args.model_name,
        max_payload_bytes=args.max_payload_bytes,
        max_inputs_per_request=args.max_inputs_per_request,
        max_inflight_inputs=args.max_inflight_inputs,
        batch_size=args.batch_size,
        graceful_timeout=args.graceful_timeout,
        access_log=args.access_log,
        log_level=args.log_level,
    )


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number
