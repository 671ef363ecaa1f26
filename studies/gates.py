"""The gates of every path ``backend="auto"`` may pick, measured on this CPU: STS-B dev spearman against the fp32
graph's, the minimum cosine to the fp32 reference on dev sentences and on 200-256-token passages, and how far a text
moves between being embedded alone and inside a padded batch of 32.

    python -m studies.gates --reference DIR [--passages 128] [--out STEM]

``--reference`` is an artifact folder holding the fp32 graph exported from the same fine-tune as the shipped int8
graph (``python -m export onnx --out DIR``; its vectors are PyTorch's to cosine 1.000000, the manifest's fp32 row).
Alone vs batch: every fifth dev sentence and every passage, each embedded alone and in batches of 32 of mixed lengths
(the passages pad to their longest). Writes ``benchmarks/results/gates-<machine>.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from benchmarks.config import DEFAULT_OUT, write_study
from benchmarks.docs_studies import gate_rows
from benchmarks.machine import describe, library_versions
from benchmarks.workloads import counter, long_passages
from export.data import gold_scores, pair_texts, read_sts, score_stacked

PATHS = {"auto": "auto", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def measure_path(
    encoder: runtime.Encoder, pairs: list[Any], dev: list[str], long: list[str], reference: dict[str, np.ndarray]
) -> dict[str, Any]:
    """One path's gate figures."""
    got = {"dev": encoder.encode(dev, batch_size=32), "long": encoder.encode(long, batch_size=32)}
    sample = {"dev": dev[::5], "long": long}
    batched = {"dev": got["dev"][::5], "long": got["long"]}
    alone = {part: np.stack([encoder.encode(t) for t in texts]) for part, texts in sample.items()}
    cosines = {part: float((got[part] * reference[part]).sum(axis=1).min()) for part in got}
    return {
        "rule": encoder.rule,
        "inference_precision": encoder.info["inference_precision"],
        "dev_spearman": float(score_stacked(got["dev"], gold_scores(pairs)).spearman),
        "min_cosine_to_reference": cosines,
        "alone_vs_batch": {
            "min_cosine": min(float((alone[p] * batched[p]).sum(axis=1).min()) for p in alone),
            "max_abs": max(float(np.abs(alone[p] - batched[p]).max()) for p in alone),
            "texts": sum(len(t) for t in sample.values()),
        },
    }


def markdown(doc: dict[str, Any]) -> str:
    """The gates table of a result document."""
    m = doc["machine"]
    lines = [
        f"# Gates, {m['cpu_model']} ({m['isa_class']}), {doc['threads']} threads",
        "",
        f"fp32 reference spearman {doc['reference_spearman']:.6f}; {doc['dev_sentences']} dev sentences, "
        f"{doc['passages']} passages.",
        "",
        *gate_rows(doc),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure, write json and md, print the md."""
    parser = argparse.ArgumentParser(prog="python -m studies.gates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="artifact folder with the fp32 graph")
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="output stem (default: results/gates-<machine>)")
    args = parser.parse_args(argv)
    pairs = read_sts("dev")
    dev = pair_texts(pairs)
    long = long_passages(counter(args.reference), args.passages, 200, 256)
    fp32 = runtime.load(args.reference, provider="cpu", precision="fp32", threads=args.threads, backend="onnxruntime")
    reference = {"dev": fp32.encode(dev), "long": fp32.encode(long)}
    paths = {}
    for name, backend in PATHS.items():
        try:
            encoder = runtime.load(provider="cpu", threads=args.threads, backend=backend)
        except runtime.BackendUnavailable as err:
            paths[name] = {"unavailable": str(err)}
            continue
        paths[name] = measure_path(encoder, pairs, dev, long, reference)
    machine = describe()
    doc = {
        "kind": "gates",
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "libraries": library_versions(),
        "threads": args.threads,
        "reference": str(args.reference),
        "reference_spearman": float(score_stacked(reference["dev"], gold_scores(pairs)).spearman),
        "dev_sentences": len(dev),
        "passages": len(long),
        "paths": {k: v for k, v in paths.items() if "unavailable" not in v},
        "unavailable": {k: v["unavailable"] for k, v in paths.items() if "unavailable" in v},
    }
    stem = args.out or DEFAULT_OUT / f"gates-{machine['name']}"
    write_study(stem, doc, markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
