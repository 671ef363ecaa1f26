"""GPU benchmark, one process: PyTorch fp16 (sentence-transformers, model.half()) vs this runtime's fp16 graph on
the CUDA execution provider, at batch 1, 32, 128 and 512 on STS-B dev and on long passages; accuracy and GPU memory.

    python -m benchmarks.gpu --checkpoint DIR --artifact DIR --out DIR [--reference dev_fp32.npy] [--device cpu --quick]

``--device cpu --quick`` is the smoke mode this script is tested with on machines without a GPU (PyTorch fp32 on
CPU vs the runtime's fp16 graph on the CPU provider, a few sentences).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from benchmarks.config import FULL
from benchmarks.workloads import counter, long_passages
from export.data import read_sts, sts_score

BATCHES = (1, 32, 128, 512)
LATENCY_CALLS = 500
LONG_PASSAGES = 256
Embed = Callable[[list[str], int], np.ndarray]


def throughput(embed: Embed, texts: list[str], batch: int, sync: Callable[[], None]) -> float:
    """Sentences per second over ``texts`` (best of two passes after a warm-up batch)."""
    embed(texts[: max(batch, 8)], batch)
    best = 0.0
    for _ in range(2):
        sync()
        start = time.perf_counter()
        embed(texts, batch)
        sync()
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def latency_ms(embed: Embed, texts: list[str], calls: int, sync: Callable[[], None]) -> dict[str, float]:
    """p50/p99 of single-sentence calls."""
    times = []
    for i in range(calls):
        start = time.perf_counter()
        embed([texts[i % len(texts)]], 1)
        sync()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p99": times[int(0.99 * (len(times) - 1))]}


def accuracy(embed: Embed, reference: np.ndarray | None) -> dict[str, float]:
    """STS-B dev spearman, and min cosine to the fp32 PyTorch reference when given."""
    pairs = read_sts("dev")
    emb = embed([p.s1 for p in pairs] + [p.s2 for p in pairs], 128)
    n = len(pairs)
    result = {"dev_spearman": sts_score(emb[:n], emb[n:], np.array([p.score for p in pairs])).spearman}
    if reference is not None:
        a = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        result["min_cosine_to_fp32"] = float(np.sum(a * b, axis=1).min())
    return result


def torch_system(checkpoint: Path, device: str) -> tuple[Embed, Callable[[], None], Callable[[], float]]:
    """sentence-transformers on ``device``; fp16 on CUDA."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(checkpoint), device=device)
    if device == "cuda":
        model.half()

    def embed(texts: list[str], batch: int) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch, convert_to_numpy=True), dtype=np.float32)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def memory_mib() -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")

    return embed, sync, memory_mib


def runtime_system(artifact: Path, device: str) -> tuple[Embed, Callable[[], None], Callable[[], float]]:
    """This runtime's fp16 graph on the CUDA provider (or the CPU provider in smoke mode)."""
    encoder = runtime.load(artifact, provider=device, precision="fp16")

    def embed(texts: list[str], batch: int) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch)

    def memory_mib() -> float:
        if device != "cuda":
            return float("nan")
        import torch  # device-wide use: onnxruntime's arena is not visible to torch's allocator statistics

        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20

    return embed, lambda: None, memory_mib


def measure(
    name: str,
    system: tuple[Embed, Callable[[], None], Callable[[], float]],
    texts: list[str],
    long_texts: list[str],
    reference: np.ndarray | None,
    quick: bool,
) -> dict[str, Any]:
    embed, sync, memory = system
    batches = (1, 32) if quick else BATCHES
    result: dict[str, Any] = {"system": name}
    result["dev_sent_per_s"] = {b: throughput(embed, texts if b > 1 else texts[:300], b, sync) for b in batches}
    result["long_sent_per_s"] = {b: throughput(embed, long_texts, b, sync) for b in batches if b > 1}
    result["latency_ms"] = latency_ms(embed, texts, 20 if quick else LATENCY_CALLS, sync)
    result["accuracy"] = accuracy(embed, reference) if not quick else {}
    result["gpu_memory_mib"] = memory()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="fine-tuned sentence-transformers folder")
    parser.add_argument("--artifact", type=Path, required=True, help="artifact folder holding model.fp16.onnx")
    parser.add_argument("--reference", type=Path, help="PyTorch fp32 embeddings of the 3,000 dev sentences (.npy)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="a few sentences: smoke test only")
    args = parser.parse_args()
    if args.device == "cuda":
        # torch brings the CUDA libraries onnxruntime-gpu links against: load them before any session
        import torch

    pairs = read_sts("dev")
    texts = [p.s1 for p in pairs] + [p.s2 for p in pairs]
    # the CPU benchmark's long set (200-256 tokens), more of it
    long_texts = long_passages(counter(args.artifact), LONG_PASSAGES, FULL.long_min_tokens, FULL.long_max_tokens)
    if args.quick:
        texts, long_texts = texts[:64], long_texts[:32]
    reference = np.load(args.reference) if args.reference else None
    # Runtime first: torch's CUDA context would otherwise count in the runtime's device-wide memory figure.
    results = [
        measure(
            "runtime fp16 " + args.device,
            runtime_system(args.artifact, args.device),
            texts,
            long_texts,
            reference,
            args.quick,
        ),
        measure(
            "pytorch " + ("fp16 " if args.device == "cuda" else "fp32 ") + args.device,
            torch_system(args.checkpoint, args.device),
            texts,
            long_texts,
            reference,
            args.quick,
        ),
    ]
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none"
    report = {
        "gpu": gpu,
        "python": platform.python_version(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "providers": runtime.available_providers(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    rt, pt = results
    lines = [f"GPU: {gpu}", "", "| figure | runtime fp16 | PyTorch | ratio |", "|---|---|---|---|"]
    for key in ("dev_sent_per_s", "long_sent_per_s"):
        for b, v in rt[key].items():
            lines.append(f"| {key} batch {b} | {v:.0f} | {pt[key][b]:.0f} | {v / pt[key][b]:.2f}x |")
    for q in ("p50", "p99"):
        lines.append(
            f"| latency {q} ms | {rt['latency_ms'][q]:.2f} | {pt['latency_ms'][q]:.2f} | "
            f"{pt['latency_ms'][q] / rt['latency_ms'][q]:.2f}x faster |"
        )
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
