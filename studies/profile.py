"""Where a graph spends its time: onnxruntime's profiler over the benchmark's workloads, as op-type shares.

    python -m studies.profile [--artifact DIR] [--precisions int8,fp32] [--threads 2] [--json FILE]

Each workload runs through the runtime's own tokenisation and batching (sorted by length, at most
``TOKENS_PER_RUN`` padded tokens per run), with ``SessionOptions.enable_profiling`` on. Prints, per graph and
workload, the share of summed kernel time per operator type and the mean wall time of a session run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

import runtime
from benchmarks.workloads import counter, long_passages
from export.data import dev_sentences
from runtime.encoder import Encoder
from runtime.session import session_options


@dataclass(frozen=True)
class Workload:
    """Texts embedded at one batch size."""

    name: str
    texts: list[str]
    batch_size: int


def workloads(artifact: Path, dev_count: int, long_count: int, single_count: int) -> list[Workload]:
    """Dev sentences at batch 32, 200-256-token passages at batch 32, single dev sentences at batch 1."""
    dev = dev_sentences()
    return [
        Workload("dev b32", dev[:dev_count], 32),
        Workload("long b32", long_passages(counter(artifact), long_count, 200, 256), 32),
        Workload("dev b1", dev[:single_count], 1),
    ]


def feeds(encoder: Encoder, workload: Workload) -> Iterator[dict[str, np.ndarray]]:
    """The session inputs the runtime would build for ``workload``."""
    ids = encoder.tokenize(workload.texts)
    for rows in encoder.batch_plan(ids, workload.batch_size):
        width = max(len(ids[i]) for i in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for j, i in enumerate(rows):
            input_ids[j, : len(ids[i])] = ids[i]
            mask[j, : len(ids[i])] = 1
        yield {"input_ids": input_ids, "attention_mask": mask}


def profile(graph: Path, batches: list[dict[str, np.ndarray]], threads: int) -> dict[str, Any]:
    """Run ``batches`` once to warm up, then once profiled; return op-type kernel-time shares and run times."""
    options = session_options(threads)
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "run")
        session = ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])
        for feed in batches:  # warm-up (profiled too; dropped below)
            session.run(None, feed)
        start = time.perf_counter()
        for feed in batches:
            session.run(None, feed)
        wall = time.perf_counter() - start
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    measured = runs[len(batches) :]
    first_measured_ts = measured[0]["ts"]
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_measured_ts:
            per_op[e["args"]["op_name"]] += e["dur"]
    kernel_total = sum(per_op.values())
    return {
        "runs": len(batches),
        "wall_ms": round(wall * 1e3, 2),
        "run_ms_mean": round(float(np.mean([r["dur"] for r in measured])) / 1e3, 4),
        "kernel_ms": round(kernel_total / 1e3, 2),
        "op_share": {op: round(us / kernel_total, 4) for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=None, help="artifact folder (default: the shipped model)")
    parser.add_argument("--precisions", default="int8,fp32", help="comma-separated graph variants to profile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dev", type=int, default=640, help="dev sentences at batch 32")
    parser.add_argument("--long", type=int, default=64, help="200-256-token passages at batch 32")
    parser.add_argument("--single", type=int, default=200, help="dev sentences at batch 1")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    artifact = args.artifact or runtime.artifact.default_artifact_dir()
    loads = workloads(artifact, args.dev, args.long, args.single)
    results: dict[str, Any] = {"loadavg_before": os.getloadavg(), "threads": args.threads, "profiles": {}}
    for precision in [p for p in args.precisions.split(",") if p]:
        encoder = runtime.load(
            artifact, provider="cpu", precision=precision, threads=args.threads, backend="onnxruntime"
        )
        graph = artifact / encoder.manifest.variants[encoder.precision].graph.file
        for work in loads:
            found = profile(graph, list(feeds(encoder, work)), args.threads)
            results["profiles"][f"{precision} {work.name}"] = found
            top = ", ".join(f"{op} {share:.1%}" for op, share in list(found["op_share"].items())[:12])
            print(f"{precision} {work.name}: {found['run_ms_mean']:.3f} ms/run, {found['runs']} runs; {top}")
    results["loadavg_after"] = os.getloadavg()
    print(f"loadavg before {results['loadavg_before']}, after {results['loadavg_after']}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
