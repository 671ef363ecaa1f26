"""Long run: 100,000 texts of varied lengths through encode() calls of 1-8 texts on one encoder, sampling RSS.

python -m studies.soak [--texts 100000] [--out benchmarks/results/soak.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

import runtime
from benchmarks.config import DEFAULT_OUT
from benchmarks.procs import rss_mib
from export.data import read_sts

WARMUP_FRACTION = 0.1


def workload(seed: int) -> list[str]:
    """Dev/train sentences plus passages of ~50-400 tokens built from them."""
    rng = random.Random(seed)
    sentences = [t for p in read_sts("train") for t in (p.s1, p.s2)]
    passages = [" ".join(rng.sample(sentences, rng.randint(3, 30))) for _ in range(500)]
    return sentences + passages


def soak(texts: int, seed: int = 0, every: int = 1000) -> dict[str, object]:
    """Encode ``texts`` random texts in calls of 1-8; return the RSS curve (sampled every ``every`` calls)."""
    rng = random.Random(seed)
    pool = workload(seed)
    encoder = runtime.load(provider="cpu")
    curve: list[tuple[int, float]] = [(0, rss_mib())]
    texts_done = call = 0
    start = time.perf_counter()
    while texts_done < texts:
        call += 1
        batch = rng.sample(pool, min(rng.randint(1, 8), texts - texts_done))
        out = encoder.encode(batch, batch_size=rng.choice([1, 4, 32]))
        if not np.isfinite(out).all():
            raise RuntimeError(f"call {call}: non-finite embedding")
        texts_done += len(batch)
        if call % every == 0:
            curve.append((call, rss_mib()))
    curve.append((call, rss_mib()))
    seconds = time.perf_counter() - start
    warm = next(r for c, r in curve if c >= call * WARMUP_FRACTION)
    return {
        "calls": call,
        "texts": texts_done,
        "seconds": round(seconds, 1),
        "rss_start_mib": round(curve[0][1], 1),
        "rss_after_warmup_mib": round(warm, 1),
        "rss_end_mib": round(curve[-1][1], 1),
        "growth_after_warmup_pct": round(100 * (curve[-1][1] - warm) / warm, 2),
        "curve": [(c, round(r, 1)) for c, r in curve],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "soak.json")
    args = parser.parse_args()
    result = soak(args.texts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k != "curve"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
