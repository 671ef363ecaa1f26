"""The benchmark run: prepare peers, measure the machine, then round-robin rounds of one fresh process per system."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.config import REPO, Paths, Settings
from benchmarks.peers import adapter
from benchmarks.systems import System, unavailable_reason

log = logging.getLogger(__name__)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


class WorkerError(RuntimeError):
    """A worker process failed; the message ends with the last lines of its stderr."""


@dataclass
class Outcome:
    """Everything measured for one system; ``status`` is ok, skipped (cannot run here) or failed (raised)."""

    system: System
    status: str = "ok"
    reason: str | None = None
    prepare_s: float | None = None
    cold: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, stage: str, err: Exception) -> None:
        self.status, self.reason = "failed", f"{stage}: {err}"
        log.warning("%s failed in %s: %s", self.system.name, stage, err)


@dataclass(frozen=True)
class Run:
    """The raw material of a report."""

    settings: Settings
    paths: Paths
    texts: dict[str, Any]
    ceiling: dict[str, float]
    outcomes: list[Outcome]
    embeddings: dict[str, dict[str, Any]]
    env: dict[str, str]
    seconds: float


def worker_env(threads: int) -> dict[str, str]:
    """The workers' environment: offline hubs, and every thread pool that reads the environment held to ``threads``."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def spawn(task: str, settings: Settings, paths: Paths, tmp: Path, **extra: Any) -> dict[str, Any]:
    """Run one worker task in a new interpreter and return its result."""
    name = f"{task}-{extra.get('system', 'machine')}-{time.monotonic_ns()}"
    spec_path, result_path = tmp / f"{name}.spec.json", tmp / f"{name}.result.json"
    spec = {"task": task, "settings": settings.as_dict(), "paths": paths.as_dict(), **extra, "spawned": time.time()}
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, "-m", "benchmarks.worker", str(spec_path), str(result_path)]
    try:
        done = subprocess.run(
            command,
            cwd=REPO,
            env=worker_env(settings.threads),
            capture_output=True,
            text=True,
            timeout=settings.worker_timeout_s,
        )
    except subprocess.TimeoutExpired as err:
        raise WorkerError(f"{task} timed out after {settings.worker_timeout_s} s") from err
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-3:]
        raise WorkerError(f"{task} exited {done.returncode}: " + " | ".join(tail))
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    return result


def run(systems: list[System], settings: Settings, paths: Paths) -> Run:
    """Measure ``systems``; a system that cannot run or fails is recorded as such and the run goes on."""
    start = time.perf_counter()
    outcomes = [Outcome(s) for s in systems]
    for outcome in outcomes:
        reason = unavailable_reason(outcome.system, paths)
        if reason:
            outcome.status, outcome.reason = "skipped", reason
            log.info("skip %s: %s", outcome.system.name, reason)
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        tmp = Path(folder)
        texts = _write_texts(settings, paths, tmp / "texts.json")
        _prepare(outcomes, settings, paths, tmp)
        log.info("machine ceiling (GEMM rates)")
        ceiling = spawn("ceiling", settings, paths, tmp)["gops"]
        (tmp / "embeddings").mkdir()
        for round_no in range(settings.rounds):
            _round(outcomes, round_no, settings, paths, tmp)
        embeddings = _read_embeddings(outcomes, tmp / "embeddings")
    env = {k: v for k, v in worker_env(settings.threads).items() if k in THREAD_VARIABLES}
    return Run(settings, paths, texts, ceiling, outcomes, embeddings, env, time.perf_counter() - start)


def _write_texts(settings: Settings, paths: Paths, path: Path) -> dict[str, Any]:
    """The workloads, written once so that every worker embeds exactly the same texts."""
    work = workloads.build(settings, paths.artifact)
    texts = {"dev": work.dev, "long": work.long, "gold": [p.score for p in work.pairs]}
    path.write_text(json.dumps(texts), encoding="utf-8")
    return texts


def _prepare(outcomes: list[Outcome], settings: Settings, paths: Paths, tmp: Path) -> None:
    for outcome in outcomes:
        if outcome.status != "ok" or not hasattr(adapter(outcome.system.adapter), "prepare"):
            continue
        log.info("prepare %s (cached under %s)", outcome.system.name, paths.cache)
        try:
            outcome.prepare_s = spawn("prepare", settings, paths, tmp, system=outcome.system.name)["seconds"]
        except WorkerError as err:
            outcome.fail("prepare", err)


def _round(outcomes: list[Outcome], round_no: int, settings: Settings, paths: Paths, tmp: Path) -> None:
    """One cold start and one bench process per system; the order rotates each round so none always goes first."""
    live = [o for o in outcomes if o.status == "ok"]
    order = live[round_no % len(live) :] + live[: round_no % len(live)] if live else []
    for outcome in order:
        name = outcome.system.name
        log.info("round %d/%d: %s", round_no + 1, settings.rounds, name)
        extra = {"system": name, "texts": str(tmp / "texts.json")}
        try:
            outcome.cold.append(spawn("cold", settings, paths, tmp, **extra))
            saved = {"embeddings": str(tmp / "embeddings")} if round_no == 0 else {}
            outcome.rounds.append(spawn("bench", settings, paths, tmp, **extra, **saved))
        except WorkerError as err:
            outcome.fail(f"round {round_no + 1}", err)


def _read_embeddings(outcomes: list[Outcome], folder: Path) -> dict[str, dict[str, Any]]:
    import numpy as np

    found = {}
    for outcome in outcomes:
        name = outcome.system.name
        if (folder / f"{name}.dev.npy").is_file():
            found[name] = {part: np.load(folder / f"{name}.{part}.npy") for part in ("dev", "long")}
    return found
