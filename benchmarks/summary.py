"""From raw worker results to the result document: best-of-rounds figures, ratios to the baseline, roofline shares,
fidelity to the baseline's vectors, installed sizes. Raw per-round numbers are kept beside the derived ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import ceiling, machine, workloads
from benchmarks.config import BASELINE
from benchmarks.footprint import installed_size
from benchmarks.measure import cosine_rows
from benchmarks.runner import Outcome, Run
from runtime.artifact import MAX_SEQ_LENGTH


def document(run: Run) -> dict[str, Any]:
    """The whole result document (what ``<machine>.json`` holds)."""
    tokens = _token_counts(run)
    systems = {o.system.name: _system(o, run, tokens) for o in run.outcomes}
    _add_ratios(systems)
    return {
        "machine": machine.describe(),
        "versions": machine.library_versions(),
        "baseline": BASELINE,
        "threads": run.settings.threads,
        "thread_env": run.env,
        "settings": run.settings.as_dict(),
        "paths": run.paths.as_dict(),
        "elapsed_s": round(run.seconds, 1),
        "workloads": {name: _token_stats(counts) for name, counts in tokens.items()},
        "ceiling": {
            "gops": run.ceiling,
            "flops_per_text": {name: ceiling.mean_flops(c, MAX_SEQ_LENGTH) for name, c in tokens.items()},
            "model": {
                "layers": ceiling.LAYERS,
                "hidden": ceiling.HIDDEN,
                "ffn": ceiling.FFN,
                "dense_params": ceiling.DENSE_PARAMS,
            },
        },
        "systems": systems,
    }


def _token_counts(run: Run) -> dict[str, list[int]]:
    counter = workloads.counter(run.paths.artifact)
    return {name: workloads.token_counts(counter, run.texts[name]) for name in ("dev", "long")}


def _token_stats(counts: list[int]) -> dict[str, float]:
    return {"texts": len(counts), "mean_tokens": float(np.mean(counts)), "max_tokens": int(max(counts))}


def _system(outcome: Outcome, run: Run, tokens: dict[str, list[int]]) -> dict[str, Any]:
    s = outcome.system
    entry: dict[str, Any] = {
        "label": s.label,
        "adapter": s.adapter,
        "precision": s.precision,
        "device": s.device,
        "status": outcome.status,
        "reason": outcome.reason,
        "prepare_s": outcome.prepare_s,
    }
    if outcome.status == "skipped":
        return entry
    size = installed_size(s.distributions)
    entry.update(installed_mb=size.mb, installed_distributions=size.distributions, installed_missing=size.missing)
    if not outcome.rounds:
        return entry
    first = outcome.rounds[0]
    best = _best(outcome)
    max_tokens = int(first["notes"].get("max_seq_length") or MAX_SEQ_LENGTH)
    entry.update(
        best=best,
        accuracy=first["accuracy"],
        model_mb=first["model_mb"],
        model_files=first["model_files"],
        notes=first["notes"],
        batch_1_vs_32_cosine=first["batch_1_vs_32_cosine"],
        roofline_pct=_roofline(best["throughput"], s.precision, run.ceiling, tokens, max_tokens),
        fidelity_to_baseline=_fidelity(s.name, run.embeddings),
        rounds=outcome.rounds,
        cold=outcome.cold,
    )
    return entry


def _best(outcome: Outcome) -> dict[str, Any]:
    """Best of the rounds: highest throughput, lowest latency, cold start and peak memory."""
    rounds = outcome.rounds
    throughput = {k: max(r["throughput"][k] for r in rounds) for k in rounds[0]["throughput"]}
    latency = {k: min(r["latency_ms"][k] for r in rounds) for k in ("p50", "p99")}
    return {
        "throughput": throughput,
        "latency_ms": latency,
        "cold_start_s": min(c["cold_start_s"] for c in outcome.cold) if outcome.cold else None,
        "peak_rss_mb": min(r["peak_rss_mb"] for r in rounds),
    }


def ceiling_rate(precision: str, gops: dict[str, float]) -> float | None:
    """The best GEMM rate (giga-ops/s) measured for ``precision`` on this machine (None: none measured, e.g. bf16)."""
    measured = [v for k, v in gops.items() if k.startswith(f"{precision}_")]
    return max(measured) if measured else None


def _roofline(
    throughput: dict[str, float], precision: str, gops: dict[str, float], tokens: dict[str, list[int]], max_tokens: int
) -> dict[str, float]:
    """Each throughput as % of (GEMM rate / useful FLOPs per text), FLOPs at the system's own truncation."""
    rate = ceiling_rate(precision, gops)
    if rate is None:
        return {}
    shares = {}
    for key, value in throughput.items():
        flops = ceiling.mean_flops(tokens[key.split("@")[0]], max_tokens)
        shares[key] = 100.0 * value / (rate * 1e9 / flops)
    return shares


def _fidelity(name: str, embeddings: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]] | None:
    """Cosine of this system's vectors to the baseline's, text by text (dev at batch 32, long passages)."""
    if name not in embeddings or BASELINE not in embeddings:
        return None
    mine, base = embeddings[name], embeddings[BASELINE]
    return {part: cosine_rows(mine[part], base[part]) for part in ("dev", "long")}


def _add_ratios(systems: dict[str, dict[str, Any]]) -> None:
    """``ratios``: each figure divided by the baseline's (throughput > 1 is faster; latency < 1 is faster)."""
    base = systems.get(BASELINE, {}).get("best")
    if not base:
        return
    for entry in systems.values():
        best = entry.get("best")
        if not best:
            continue
        ratios = {k: v / base["throughput"][k] for k, v in best["throughput"].items() if base["throughput"].get(k)}
        ratios.update({f"latency_{k}": v / base["latency_ms"][k] for k, v in best["latency_ms"].items()})
        for key in ("cold_start_s", "peak_rss_mb"):
            if best[key] and base[key]:
                ratios[key] = best[key] / base[key]
        base_mb = systems[BASELINE].get("installed_mb")
        if base_mb and entry.get("installed_mb"):
            ratios["installed_mb"] = entry["installed_mb"] / base_mb
        entry["ratios"] = ratios
