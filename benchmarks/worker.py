"""One measurement in a fresh process: ``python -m benchmarks.worker SPEC.json RESULT.json``.

The runner starts one worker per task and system, so no system's idle thread pool, allocator or import cache affects
another's numbers. Tasks: ``prepare`` (build the peer's model files), ``cold`` (process start -> first embedding),
``bench`` (throughput, latency, peak memory, accuracy), ``ceiling`` (GEMM rates).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.config import Paths, Settings
from benchmarks.peers import Peer, adapter
from benchmarks.systems import BY_NAME, System


def main(argv: list[str]) -> None:
    """Run the task described by the spec file and write its result as JSON."""
    started = time.time()
    spec_path, result_path = (Path(a) for a in argv)
    result = run_task(json.loads(spec_path.read_text(encoding="utf-8")), started)
    result_path.write_text(json.dumps(result), encoding="utf-8")


def run_task(spec: dict[str, Any], started: float) -> dict[str, Any]:
    """Dispatch one task; ``started`` is when this interpreter reached its own code."""
    settings, paths, task = Settings.from_dict(spec["settings"]), Paths.from_dict(spec["paths"]), spec["task"]
    if task == "ceiling":
        from benchmarks.ceiling import measure

        return {"gops": measure(settings.gemm_size, settings.threads)}
    system = BY_NAME[spec["system"]]
    if task == "prepare":
        return prepare(system, paths, settings)
    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    if task == "cold":
        return cold(system, paths, settings, texts["dev"][0], spec["spawned"], started)
    if task == "bench":
        return bench(system, paths, settings, texts, spec.get("embeddings"))
    raise ValueError(f"unknown task {task!r}")


def _load(system: System, paths: Paths, settings: Settings) -> Peer:
    peer: Peer = adapter(system.adapter).load(system, paths, settings.threads)
    return peer


def prepare(system: System, paths: Paths, settings: Settings) -> dict[str, Any]:
    """Build the system's model files (a no-op for systems that read the checkpoint or artifact directly)."""
    module = adapter(system.adapter)
    start = time.perf_counter()
    if hasattr(module, "prepare"):
        module.prepare(system, paths, settings)
    return {"seconds": time.perf_counter() - start}


def cold(system: System, paths: Paths, settings: Settings, text: str, spawned: float, started: float) -> dict[str, Any]:
    """Wall time from the runner's spawn of this process to the first embedding, split into its phases."""
    from benchmarks.procs import peak_rss_mib

    peer = _load(system, paths, settings)
    loaded = time.time()
    peer.embed([text], 1)
    done = time.time()
    return {
        "cold_start_s": done - spawned,
        "interpreter_s": started - spawned,
        "import_load_s": loaded - started,
        "first_embed_s": done - loaded,
        "rss_mb": peak_rss_mib(),
    }


def bench(
    system: System, paths: Paths, settings: Settings, texts: dict[str, Any], embeddings: str | None
) -> dict[str, Any]:
    """Throughput on dev at each batch size and on the long passages, single-text latency, peak RSS, accuracy."""
    import numpy as np

    from benchmarks import measure
    from benchmarks.procs import peak_rss_mib
    from export.data import score_stacked

    start = time.perf_counter()
    peer = _load(system, paths, settings)
    load_s = time.perf_counter() - start
    contention = measure.Contention()
    rates, kept = _throughputs(peer, texts, settings)
    latency = measure.latency_ms(peer.embed, texts["dev"], settings.latency_calls)
    timed = contention.result()
    scored = kept[f"dev@{settings.accuracy_batch}"]
    score = score_stacked(scored, texts["gold"])
    if embeddings:
        np.save(Path(embeddings) / f"{system.name}.dev.npy", scored)
        np.save(Path(embeddings) / f"{system.name}.long.npy", kept["long"])
    return {
        "load_s": load_s,
        "timed": timed,
        "throughput": rates,
        "latency_ms": latency,
        "peak_rss_mb": peak_rss_mib(),
        "accuracy": {"spearman": score.spearman, "pearson": score.pearson},
        "batch_1_vs_32_cosine": measure.cosine_rows(kept["dev@1"], scored),
        "model_mb": sum(f.stat().st_size for f in peer.model_files) / 2**20,
        "model_files": [str(f) for f in peer.model_files],
        "notes": peer.notes,
    }


def _throughputs(peer: Peer, texts: dict[str, Any], settings: Settings) -> tuple[dict[str, float], dict[str, Any]]:
    """Texts/s per workload (``dev@<batch>``, ``long@<batch>``) and the embeddings each pass produced."""
    from benchmarks import measure

    runs = {f"dev@{b}": measure.throughput(peer.embed, texts["dev"], b) for b in settings.batch_sizes}
    runs[f"long@{settings.long_batch}"] = measure.throughput(peer.embed, texts["long"], settings.long_batch)
    kept = {key: run.embeddings for key, run in runs.items()}
    kept["long"] = kept[f"long@{settings.long_batch}"]
    return {key: run.sentences_per_s for key, run in runs.items()}, kept


if __name__ == "__main__":
    main(sys.argv[1:])
