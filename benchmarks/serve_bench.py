"""The HTTP server against the in-process library and infinity-emb, on one core each side.

    flock /work/locks/bench.lock python -m benchmarks.serve_bench [--quick] [--infinity-python P --infinity-model D]

Every server runs pinned to core 0 with one intra-op thread; this process, the load generator, pins itself to core 1.
The baselines are the library (``runtime.load(threads=1).encode``) on core 0, measured in this same run before and
after the server runs: calls of 32 and of 1 consecutive texts, and one call over all the texts (batch 32, padded
little because ``encode`` sorts a call's texts by length). Every load and baseline embeds the same texts, the first
2,000 STS-B dev sentences (``bench_texts``). Each closed-loop load runs twice: ``loadgen`` and a plain
aiohttp client (``benchmarks.clients``). A last section runs the server on both cores with 1 and 2 workers.
Writes ``benchmarks/results/server-<machine>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import clients, loadgen
from benchmarks.machine import describe, library_versions
from benchmarks.procs import loadavg, rss_mib, thread_affinities
from benchmarks.server_process import ServerProcess, free_port
from benchmarks.stats import percentile
from export.data import dev_sentences

SERVER_CORE, CLIENT_CORE = 0, 1
RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# Every load and every library baseline embeds these same texts: per-text cost follows token count, and STS-B dev's
# first 512 sentences average 11.3 tokens, its first 2,000 15.0, all 3,000 16.2.
CORPUS_TEXTS = 2000
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def start_server(
    name: str,
    cmd: list[str],
    port: int,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    cores: str = str(SERVER_CORE),
) -> ServerProcess:
    """A server subprocess pinned to ``cores``, one thread per library, ready once ``/health`` answers 200."""
    env = {
        **os.environ,
        **ONE_THREAD,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        **(env or {}),
    }
    log = Path("/tmp") / f"serve-bench-{name}-{port}.log"
    return ServerProcess(name, ["taskset", "-c", cores, *cmd], port, log, cwd=cwd, env=env)


def our_server(*extra: str, cores: str = str(SERVER_CORE)) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "runtime", "--provider", "cpu", "serve", "--port", str(port), "--threads", "1", *extra]
    return start_server("runtime-serve", cmd, port, cores=cores)


INFINITY_VARIANTS = {  # name: (engine, extra flags); mean pooling as the model was trained (optimum's auto is CLS)
    "optimum-int8": ("optimum", []),  # prefers model_quantized.onnx on CPU
    "optimum-fp32": ("optimum", ["--onnx-do-not-prefer-quantized"]),
    "torch": ("torch", []),
}


# onnxruntime sizes its default intra-op pool by the machine's cores and pins each pool thread to a core of its own,
# ignoring the process's affinity: under `taskset -c 0` infinity's session still ran a thread on core 1 (measured:
# 96 % of core 1, the load generator's core). Infinity has no thread option, so its interpreter gets this
# sitecustomize, which gives every session one intra-op thread, as our server runs with --threads 1.
ORT_ONE_THREAD = """\
import onnxruntime as _ort

_init = _ort.InferenceSession.__init__


def _one_thread(self, path_or_bytes, sess_options=None, *args, **kwargs):
    options = sess_options if sess_options is not None else _ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    _init(self, path_or_bytes, options, *args, **kwargs)


_ort.InferenceSession.__init__ = _one_thread
"""


SITE = REPO / "build" / "serve-bench-site"  # the sitecustomize's folder (build/ is git-ignored)


def _one_thread_site() -> Path:
    SITE.mkdir(parents=True, exist_ok=True)
    (SITE / "sitecustomize.py").write_text(ORT_ONE_THREAD)
    return SITE


def infinity_server(python: str, model: Path, variant: str) -> ServerProcess:
    port = free_port()
    engine, extra = INFINITY_VARIANTS[variant]
    exe = str(Path(python).parent / "infinity_emb")
    # "--model-id ." from inside the folder: infinity 0.0.78 hands optimum 2.x the ONNX file's full path, which
    # optimum no longer matches against the folder's files; relative to "." the two agree.
    cmd = [exe, "v2", "--model-id", ".", "--engine", engine, "--device", "cpu", "--port", str(port)]
    cmd += ["--served-model-name", "minilm", "--batch-size", "32", "--pooling-method", "mean", *extra]
    path = os.pathsep.join(filter(None, [str(_one_thread_site()), os.environ.get("PYTHONPATH")]))
    proc = start_server(f"infinity-{variant}", cmd, port, cwd=model, env={"PYTHONPATH": path})
    allowed = set().union(*thread_affinities(proc.proc.pid, descendants=True))
    if allowed - {SERVER_CORE}:
        proc.stop()
        raise RuntimeError(f"{proc.name}: threads allowed on CPUs {sorted(allowed)}, not only {SERVER_CORE}")
    return proc


def library(batch: int, seconds: float, corpus: bool = False) -> dict[str, Any]:
    """The in-process library on SERVER_CORE, one thread (a subprocess): encode() calls of ``batch`` consecutive
    texts, or with ``corpus`` calls over 2,000 dev texts at batch_size ``batch``."""
    loop = "_library_corpus" if corpus else "_library_loop"
    code = f"import sys, json; from benchmarks.serve_bench import {loop}; print(json.dumps({loop}({batch}, {seconds})))"
    done = subprocess.run(
        ["taskset", "-c", str(SERVER_CORE), sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 120,
        env={**os.environ, **ONE_THREAD},
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench_texts() -> list[str]:
    """The texts of every run and baseline here: the first CORPUS_TEXTS STS-B dev sentences."""
    return dev_sentences()[:CORPUS_TEXTS]


def fidelity(url: str, model: str | None = None, count: int = 64) -> float:
    """Lowest cosine between a server's embeddings of ``count`` dev sentences and this runtime's (catches a peer
    that pools or truncates differently)."""
    import runtime

    texts = dev_sentences()[:count]
    reply = httpx.post(url, json={"input": texts, "model": model, "encoding_format": "float"}, timeout=120).json()
    theirs = np.array([d["embedding"] for d in sorted(reply["data"], key=lambda d: d["index"])], dtype=np.float32)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    return round(float((theirs * runtime.load(provider="cpu", threads=1).encode(texts)).sum(axis=1).min()), 5)


def _library_loop(batch: int, seconds: float) -> dict[str, Any]:
    import runtime

    texts = bench_texts()
    encoder = runtime.load(provider="cpu", threads=1)
    encoder.encode(texts[:64])
    calls: list[float] = []
    done = i = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
        t = time.perf_counter()
        encoder.encode(chunk)
        calls.append(time.perf_counter() - t)
        done += batch
        i += batch
    elapsed = time.perf_counter() - start
    ms = np.array(calls) * 1000
    return {
        "batch": batch,
        "texts_per_s": round(done / elapsed, 1),
        "calls": len(calls),
        "call_p50_ms": percentile(ms, 50, 3),
        "call_p99_ms": percentile(ms, 99, 3),
    }


def _library_corpus(batch: int, seconds: float) -> dict[str, Any]:
    """``encode`` of 2,000 dev texts in one call, repeated for ``seconds``: the library's in-process throughput."""
    import runtime

    texts = bench_texts()
    encoder = runtime.load(provider="cpu", threads=1)
    encoder.encode(texts[:64])
    calls: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or not calls:
        t = time.perf_counter()
        encoder.encode(texts, batch_size=batch)
        calls.append(time.perf_counter() - t)
    return {
        "batch": batch,
        "texts": CORPUS_TEXTS,
        "texts_per_s": round(len(calls) * CORPUS_TEXTS / sum(calls), 1),
        "calls": len(calls),
    }


def plain_client(proc: ServerProcess, concurrency: int, batch: int, seconds: float) -> dict[str, Any]:
    """The independent aiohttp client's closed loop (``benchmarks.clients``) against a server."""
    before = loadavg()
    report = clients.run(
        "aiohttp",
        proc.url,
        bench_texts(),
        concurrency=concurrency,
        batch=batch,
        duration_s=seconds,
        warmup_s=min(3.0, seconds / 3),
    )
    return {**report, "loadavg_before": before, "loadavg_after": loadavg()}


def _load(proc: ServerProcess, batch: int, path: str = "/v1/embeddings", model: str | None = None) -> loadgen.Load:
    bodies = loadgen.payloads(bench_texts(), batch, "openai", "base64", model)
    return loadgen.Load(proc.url + path, bodies, batch)


def closed(proc: ServerProcess, concurrency: int, batch: int, seconds: float, **kw: Any) -> dict[str, Any]:
    before = loadavg()
    report = loadgen.run(_load(proc, batch, **kw), "closed", concurrency, 0.0, seconds, min(3.0, seconds / 3))
    return {**asdict(report), "loadavg_before": before, "loadavg_after": loadavg()}


def opened(proc: ServerProcess, rate: float, seconds: float, batch: int = 1, **kw: Any) -> dict[str, Any]:
    before = loadavg()
    report = loadgen.run(_load(proc, batch, **kw), "open", 0, rate, seconds, min(3.0, seconds / 3))
    return {**asdict(report), "loadavg_before": before, "loadavg_after": loadavg()}


def soak(
    proc: ServerProcess, rate: float, seconds: float, warmup_s: float = 60.0, every_s: float = 5.0
) -> dict[str, Any]:
    """Open loop at ``rate`` for ``seconds`` while sampling the server's RSS; RSS change is taken after warm-up."""
    curve: list[tuple[float, float]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            curve.append((round(time.monotonic() - start, 1), round(rss_mib(proc.proc.pid, descendants=True), 1)))
            stop.wait(every_s)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = opened(proc, rate, seconds)
    finally:
        stop.set()
        sampler.join()
    curve.append((round(time.monotonic() - start, 1), round(rss_mib(proc.proc.pid, descendants=True), 1)))
    after_warmup = [r for t, r in curve if t >= warmup_s]
    base = after_warmup[0]
    return {
        **result,
        "rss_curve_mib": curve,
        "rss_after_warmup_mib": base,
        "rss_end_mib": curve[-1][1],
        "rss_change_after_warmup_pct": round((max(after_warmup, key=lambda r: abs(r - base)) - base) / base * 100, 2),
    }


def sigterm_under_load(
    proc: ServerProcess, concurrency: int = 16, batch: int = 8, before_s: float = 4.0
) -> dict[str, Any]:
    """Closed-loop load; SIGTERM; from then on the clients issue nothing new (as behind a balancer that saw /health
    turn 503): every request issued before the signal must be answered 200, and the server must exit cleanly."""
    load = _load(proc, batch)
    samples: list[loadgen.Sample] = []
    marks: dict[str, float] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        async with loadgen.client_session(load, concurrency) as session:

            async def client(k: int) -> None:
                i = k
                while not stop.is_set():
                    await loadgen.send(session, load, load.bodies[i % len(load.bodies)], time.perf_counter(), samples)
                    i += concurrency

            tasks = [asyncio.create_task(client(k)) for k in range(concurrency)]
            await asyncio.sleep(before_s)
            marks["signal"] = time.perf_counter()
            proc.proc.send_signal(signal.SIGTERM)
            stop.set()
            await asyncio.gather(*tasks)
            marks["answered"] = time.perf_counter()
        while proc.proc.poll() is None:
            await asyncio.sleep(0.01)
        marks["exited"] = time.perf_counter()

    asyncio.run(scenario())
    at_signal = [s for s in samples if s.sent < marks["signal"] and s.sent + s.latency_s > marks["signal"]]
    return {
        "concurrency": concurrency,
        "batch": batch,
        "requests": len(samples),
        "by_status": dict(Counter(s.status for s in samples)),
        "in_flight_at_signal": len(at_signal),
        "in_flight_at_signal_by_status": dict(Counter(s.status for s in at_signal)),
        "failed": sum(s.status != "200" for s in samples),
        "exit_code": proc.proc.returncode,
        "last_answer_after_signal_s": round(marks["answered"] - marks["signal"], 3),
        "exit_after_signal_s": round(marks["exited"] - marks["signal"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument(
        "--latency-budget-ms",
        type=float,
        default=25.0,
        help="open-loop runs bound inputs in flight to this much work at the measured capacity",
    )
    parser.add_argument("--infinity-python", default=None, help="python of a venv with infinity-emb")
    parser.add_argument("--infinity-model", type=Path, default=None, help="folder from benchmarks.infinity_model")
    parser.add_argument("--infinity-torch-model", type=Path, default=None, help="sentence-transformers folder")
    parser.add_argument(
        "--infinity-variants", default="optimum-int8,optimum-fp32", help=f"of {list(INFINITY_VARIANTS)}"
    )
    parser.add_argument("--skip", default="", help="comma-separated: soak,overload,sigterm,infinity,workers")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 20 s soak: a smoke run of the whole script")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.soak_seconds = 3.0, 20.0
    skip = set(filter(None, args.skip.split(",")))
    machine = describe()  # before pinning, so the record says how many cores the machine has
    os.sched_setaffinity(0, {CLIENT_CORE})
    doc: dict[str, Any] = {
        "machine": machine,
        "libraries": library_versions(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "setup": {
            "server_core": SERVER_CORE,
            "client_core": CLIENT_CORE,
            "threads": 1,
            "seconds_per_run": args.seconds,
            "encoding_format": "base64",
            "texts": "STS-B dev sentences, cycled",
            "latency_budget_ms": args.latency_budget_ms,
            "infinity_intra_op_threads": 1,
        },
        "loadavg_start": loadavg(),
    }
    print(f"machine {machine['name']}, load {loadavg()}", file=sys.stderr)
    lib: dict[str, Any] = {"before": {b: library(b, args.seconds) for b in (32, 1)}}
    lib["corpus"] = {"before": library(32, args.seconds, corpus=True)}
    print(f"library before: {lib['before']} {lib['corpus']}", file=sys.stderr)

    srv = our_server()
    try:
        runs = {
            "closed_c16_b32": closed(srv, 16, 32, args.seconds),
            "closed_c64_b1": closed(srv, 64, 1, args.seconds),
        }
        doc["plain_client"] = {
            "closed_c16_b32": plain_client(srv, 16, 32, args.seconds),
            "closed_c64_b1": plain_client(srv, 64, 1, args.seconds),
        }
    finally:
        srv.stop()
    for k, v in runs.items():
        print(k, v["by_status"], v["inputs_per_s"], v["p50_ms"], v["p99_ms"], file=sys.stderr)
    for k, v in doc["plain_client"].items():
        print("aiohttp", k, v["requests"], v["inputs_per_s"], v["p50_ms"], v["p99_ms"], v["errors"], file=sys.stderr)
    lib["after"] = {b: library(b, args.seconds) for b in (32, 1)}
    lib["corpus"]["after"] = library(32, args.seconds, corpus=True)
    lib["best"] = best_library(lib)
    print(f"library after: {lib['after']} {lib['corpus']['after']}", file=sys.stderr)
    doc["library"] = lib
    stem = args.out or RESULTS / f"server-{machine['name']}"
    partial = stem.with_suffix(".partial.json")  # progress of this run; earlier complete results stay untouched
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps(doc, indent=2))
    capacity = runs["closed_c64_b1"]["goodput_rps"]
    doc["capacity_rps_1_text"] = capacity
    latency_inflight = max(8, round(capacity * args.latency_budget_ms / 1000))
    doc["setup"]["latency_max_inflight_inputs"] = latency_inflight

    # Open loop: 1-text requests at fractions of the closed-loop capacity, on a server whose in-flight bound is
    # sized for latency (the default 1,024 suits the 16 x 32 closed loop, not an overload).
    if "overload" not in skip:
        srv = our_server("--max-inflight-inputs", str(latency_inflight))
        try:
            for frac in (0.5, 0.8, 2.0):
                runs[f"open_{int(frac * 100)}pct"] = opened(srv, frac * capacity, args.seconds)
                r = runs[f"open_{int(frac * 100)}pct"]
                print(
                    f"open {frac}",
                    r["by_status"],
                    r["goodput_rps"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["rejected_p99_ms"],
                    file=sys.stderr,
                )
        finally:
            srv.stop()
        srv = our_server()  # the default bound under the same overload, for comparison
        try:
            runs["open_200pct_default_bound"] = opened(srv, 2.0 * capacity, args.seconds)
        finally:
            srv.stop()
    if "sigterm" not in skip:
        srv = our_server()
        runs["sigterm_under_load"] = sigterm_under_load(srv)
        print("sigterm", runs["sigterm_under_load"], file=sys.stderr)
    doc["server"] = runs
    partial.write_text(json.dumps(doc, indent=2))

    if "infinity" not in skip and args.infinity_python:
        doc["infinity"] = {}
        for variant in args.infinity_variants.split(","):
            model = args.infinity_torch_model if variant == "torch" else args.infinity_model
            try:
                inf = infinity_server(args.infinity_python, model, variant)
            except RuntimeError as err:
                doc["infinity"][variant] = {"error": str(err)[-2000:]}
                continue
            try:
                kw = {"path": "/embeddings", "model": "minilm"}
                doc["infinity"][variant] = {
                    "min_cosine_to_runtime": fidelity(inf.url + "/embeddings", "minilm"),
                    "closed_c64_b1": closed(inf, 64, 1, args.seconds, **kw),
                    "closed_c16_b32": closed(inf, 16, 32, args.seconds, **kw),
                }
            finally:
                inf.stop()
            summary = {
                k: (v["inputs_per_s"], v["p99_ms"], v["by_status"])
                for k, v in doc["infinity"][variant].items()
                if isinstance(v, dict)
            }
            print("infinity", variant, summary, file=sys.stderr)
            partial.write_text(json.dumps(doc, indent=2))

    if "workers" not in skip:
        doc["workers"] = workers_scaling(args.seconds)
        partial.write_text(json.dumps(doc, indent=2))

    if "soak" not in skip:
        srv = our_server()
        try:
            doc["soak"] = soak(srv, 0.7 * capacity, args.soak_seconds, warmup_s=min(60.0, args.soak_seconds / 5))
        finally:
            doc["soak"]["exit_code"] = srv.stop()
        print("soak", {k: v for k, v in doc["soak"].items() if k != "rss_curve_mib"}, file=sys.stderr)
    doc["loadavg_end"] = loadavg()
    doc["checks"] = checks(doc)
    write(doc, stem)
    partial.unlink()


def workers_scaling(seconds: float, counts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """The server allowed on both cores with 1 and 2 single-threaded workers, under both closed loops from this
    process (on CLIENT_CORE, which a second worker shares); RSS after each."""
    out: dict[str, Any] = {"cores": f"{SERVER_CORE},{CLIENT_CORE}"}
    for n in counts:
        srv = our_server("--workers", str(n), cores=out["cores"])
        try:
            out[str(n)] = {
                "closed_c64_b1": closed(srv, 64, 1, seconds),
                "closed_c16_b32": closed(srv, 16, 32, seconds),
                "rss_mib": round(rss_mib(srv.proc.pid, descendants=True), 1),
            }
        finally:
            srv.stop()
        summary = {k: v["inputs_per_s"] for k, v in out[str(n)].items() if isinstance(v, dict)}
        print(f"workers {n}: {summary}, RSS {out[str(n)]['rss_mib']} MiB", file=sys.stderr)
    return out


def best_library(lib: dict[Any, Any]) -> dict[Any, float]:
    """The faster of the before/after library runs per baseline: the conservative baseline on a noisy machine."""
    best: dict[Any, float] = {b: max(lib["before"][b]["texts_per_s"], lib["after"][b]["texts_per_s"]) for b in (32, 1)}
    best["corpus"] = max(lib["corpus"]["before"]["texts_per_s"], lib["corpus"]["after"]["texts_per_s"])
    return best


def checks(doc: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars, each with its measured value."""
    s, lib = doc["server"], doc["library"]["best"]
    out: dict[str, Any] = {
        "c16_b32_vs_library_b32": _ratio(s["closed_c16_b32"]["inputs_per_s"], lib[32], 0.90),
        "c64_b1_vs_library_b32": _ratio(s["closed_c64_b1"]["inputs_per_s"], lib[32], 0.80),
        "c64_b1_vs_library_b1": _ratio(s["closed_c64_b1"]["inputs_per_s"], lib[1], 0.80),
        "c64_b1_vs_library_corpus": _ratio(s["closed_c64_b1"]["inputs_per_s"], lib["corpus"], 0.90),
    }
    if "plain_client" in doc:
        plain = doc["plain_client"]["closed_c64_b1"]
        out["aiohttp_c64_b1_vs_library_corpus"] = _ratio(plain["inputs_per_s"], lib["corpus"], 0.90)
    if "workers" in doc:
        w = doc["workers"]
        for key in ("closed_c64_b1", "closed_c16_b32"):
            one, two = w["1"][key]["inputs_per_s"], w["2"][key]["inputs_per_s"]
            out[f"workers_2_vs_1_{key}"] = _ratio(two, 2 * one, 0.85)
        out["rss_per_added_worker_mib"] = round(w["2"]["rss_mib"] - w["1"]["rss_mib"], 1)
    if "open_50pct" in s:
        half, eighty, over = s["open_50pct"], s["open_80pct"], s["open_200pct"]
        out["latency_50pct"] = {
            "p50_ms": half["p50_ms"],
            "p99_ms": half["p99_ms"],
            "ok": half["p50_ms"] <= 10 and half["p99_ms"] <= 40,
        }
        fivexx = sum(n for k, n in over["by_status"].items() if k.startswith("5") or not k.isdigit())
        out["overload_200pct"] = {
            "5xx_or_errors": fivexx,
            "rejected_max_ms": over["rejected_max_ms"],
            "rejected_p99_ms": over["rejected_p99_ms"],
            "goodput_vs_peak": round(over["goodput_rps"] / doc["capacity_rps_1_text"], 3),
            "p99_vs_80pct_p99": round(over["p99_ms"] / eighty["p99_ms"], 2) if over["p99_ms"] else None,
        }
        o = out["overload_200pct"]
        o["ok"] = (
            fivexx == 0
            and (o["rejected_p99_ms"] or 0) < 5
            and o["goodput_vs_peak"] >= 0.9
            and (o["p99_vs_80pct_p99"] or 99) <= 2
        )
    if "sigterm_under_load" in s:
        t = s["sigterm_under_load"]
        out["sigterm"] = {
            "failed": t["failed"],
            "exit_code": t["exit_code"],
            "ok": t["failed"] == 0 and t["exit_code"] in (0, -15),
        }
    if "soak" in doc:
        k = doc["soak"]
        errors = sum(n for code, n in k["by_status"].items() if code != "200")
        out["soak"] = {
            "errors": errors,
            "rss_change_pct": k["rss_change_after_warmup_pct"],
            "ok": errors == 0 and abs(k["rss_change_after_warmup_pct"]) <= 10,
        }
    for engine, runs in doc.get("infinity", {}).items():
        if "error" in runs:
            continue
        ours, theirs = s["closed_c64_b1"], runs["closed_c64_b1"]
        out[f"vs_infinity_{engine}_c64_b1"] = {
            "throughput_ratio": round(ours["inputs_per_s"] / theirs["inputs_per_s"], 2),
            "p99_ms": [ours["p99_ms"], theirs["p99_ms"]],
            "ok": ours["inputs_per_s"] >= 2 * theirs["inputs_per_s"] and ours["p99_ms"] < theirs["p99_ms"],
        }
    return out


def _ratio(value: float, base: float, bar: float) -> dict[str, Any]:
    return {"value": value, "baseline": base, "ratio": round(value / base, 3), "bar": bar, "ok": value / base >= bar}


def write(doc: dict[str, Any], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    chart(doc, stem.with_suffix(".png"))
    print(f"wrote {stem}.{{json,md,png}}", file=sys.stderr)


def markdown(doc: dict[str, Any]) -> str:
    m, s, lib = doc["machine"], doc["server"], doc["library"]
    lines = [
        f"# HTTP server benchmark: {m['name']}",
        "",
        f"{m['cpu_model']} ({', '.join(m['isa'])}), {doc['created']}. Server pinned to core {SERVER_CORE} with one "
        f"intra-op thread, load generator on core {CLIENT_CORE}; requests carry STS-B dev sentences, base64 output."
        + (
            " infinity-emb's onnxruntime sessions are held to one intra-op thread too (onnxruntime would otherwise pin "
            "a pool thread to the load generator's core, whatever taskset says)."
            if doc.get("infinity")
            else ""
        ),
        f"Load average (1, 5, 15 min): start {_loads(doc['loadavg_start'])}, end {_loads(doc['loadavg_end'])} "
        "(2 cores, shared machine).",
        "",
        "| system | run | inputs/s | ratio to library b32 | p50 ms | p90 ms | p99 ms | statuses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in (32, 1):
        lines.append(
            f"| library, encode() of {b} | in-process, before / after | {lib['before'][b]['texts_per_s']} / "
            f"{lib['after'][b]['texts_per_s']} | {lib['best'][b] / lib['best'][32]:.2f} | "
            f"{lib['before'][b]['call_p50_ms']} | - | {lib['before'][b]['call_p99_ms']} | - |"
        )
    lines.append(
        f"| library, encode() of {CORPUS_TEXTS} texts, batch 32 | in-process, before / after | "
        f"{lib['corpus']['before']['texts_per_s']} / {lib['corpus']['after']['texts_per_s']} | "
        f"{lib['best']['corpus'] / lib['best'][32]:.2f} | - | - | - | - |"
    )
    rows = [("runtime serve", k, v) for k, v in s.items() if "inputs_per_s" in v]
    rows += [
        (f"infinity-emb ({e})", k, v)
        for e, runs in doc.get("infinity", {}).items()
        for k, v in runs.items()
        if isinstance(v, dict) and "inputs_per_s" in v
    ]
    for system, name, r in rows:
        lines.append(
            f"| {system} | {_run_name(name, r)} | {r['inputs_per_s']:.0f} | "
            f"{r['inputs_per_s'] / lib['best'][32]:.2f} | "
            f"{r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['by_status']} |"
        )
    for name, r in doc.get("plain_client", {}).items():
        lines.append(
            f"| runtime serve, plain aiohttp client | {name.replace('closed_', 'closed loop ')} | "
            f"{r['inputs_per_s']:.0f} | {r['inputs_per_s'] / lib['best'][32]:.2f} | {r['p50_ms']} | - | "
            f"{r['p99_ms']} | errors {r['errors']} |"
        )
    if "workers" in doc:
        w = doc["workers"]
        lines += [
            "",
            f"## Workers (server allowed on cores {w['cores']}, one thread each; the load generator shares core "
            f"{CLIENT_CORE})",
            "",
            "| workers | 64 x 1 texts/s | 16 x 32 texts/s | RSS MiB |",
            "|---|---|---|---|",
        ]
        for n in (k for k in w if k.isdigit()):
            r = w[n]
            lines.append(
                f"| {n} | {r['closed_c64_b1']['inputs_per_s']:.0f} | {r['closed_c16_b32']['inputs_per_s']:.0f} | "
                f"{r['rss_mib']} |"
            )
    lines += ["", "## Checks against the issue's bars", "", "```json", json.dumps(doc["checks"], indent=2), "```"]
    if "sigterm_under_load" in s:
        lines += ["", "## SIGTERM under load", "", "```json", json.dumps(s["sigterm_under_load"], indent=2), "```"]
    if "soak" in doc:
        k = doc["soak"]
        lines += [
            "",
            "## Soak",
            "",
            f"{k['duration_s']:.0f} s open loop at {k['rate']:.0f} req/s: {k['by_status']}, "
            f"p50 {k['p50_ms']} ms, p99 {k['p99_ms']} ms; RSS {k['rss_after_warmup_mib']} MiB after warm-up, "
            f"{k['rss_end_mib']} MiB at the end ({k['rss_change_after_warmup_pct']:+} % max change).",
        ]
    for engine, runs in doc.get("infinity", {}).items():
        if "error" in runs:
            lines += ["", f"infinity-emb engine {engine} failed to start: see the json."]
        else:
            cosine = runs["min_cosine_to_runtime"]
            lines += [
                "",
                f"infinity-emb {engine}: lowest cosine to this runtime's vectors on 64 dev sentences {cosine}.",
            ]
    return "\n".join(lines) + "\n"


def _loads(loads: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in loads)


def _run_name(name: str, r: dict[str, Any]) -> str:
    if r["mode"] == "closed":
        return f"closed loop, {r['concurrency']} clients x {r['batch']} texts"
    return f"open loop {r['rate']:.0f} req/s x {r['batch']} text ({name})"


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, lib = doc["server"], doc["library"]["best"]
    bars = [("library encode(32)", lib[32]), ("library encode(1)", lib[1])]
    bars += [
        ("serve 16 clients x 32", s["closed_c16_b32"]["inputs_per_s"]),
        ("serve 64 clients x 1", s["closed_c64_b1"]["inputs_per_s"]),
    ]
    for engine, runs in doc.get("infinity", {}).items():
        for key, label in (("closed_c16_b32", "16 x 32"), ("closed_c64_b1", "64 x 1")):
            if key in runs:
                bars.append((f"infinity {engine} {label}", runs[key]["inputs_per_s"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    left.barh(
        [b[0] for b in bars], [b[1] for b in bars], color=["#888"] * 2 + ["#1f77b4"] * 2 + ["#d62728"] * (len(bars) - 4)
    )
    left.invert_yaxis()
    left.set_xlabel("texts / s (one core)")
    left.set_title("Throughput")
    opens = [(k, v) for k, v in s.items() if k.startswith("open_") and "p99_ms" in v]
    x = np.arange(len(opens))
    for i, q in enumerate(("p50_ms", "p90_ms", "p99_ms")):
        right.bar(x + (i - 1) * 0.27, [v[q] or 0 for _, v in opens], 0.27, label=q.replace("_ms", ""))
    right.set_xticks(x, [k.replace("open_", "").replace("_", " ") for k, _ in opens], fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("ms (accepted requests, log)")
    right.set_title("Open-loop 1-text requests, load as % of capacity")
    right.legend()
    fig.suptitle(f"{doc['machine']['name']}: {doc['machine']['cpu_model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
