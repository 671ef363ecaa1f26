"""Calibrated ranges of the int8/uint8 output types, measured through the runtime and written into the manifest.

One grid per artifact, measured with one graph (int8 when present: the vectors CPU users get), so that vectors from
any of the artifact's graphs quantise onto the same grid and stay comparable with each other.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from export.data import DATA_DIR, SPLIT_FILES, read_sts
from runtime import Precision, load
from runtime.artifact import MANIFEST_FILE, Manifest, OutputRanges, read_manifest, sha256_file
from runtime.quantization import CalibrationMethod, calibrate, output_ranges

log = logging.getLogger(__name__)

# One symmetric scale from the largest |x| of all unique STS-B train sentences: chosen on STS-B train spearman of
# int8 dot products against sentence-transformers' per-dimension min/max and percentiles (python -m
# studies.precision, "calibration" table; docs/output-types.md).
METHOD: CalibrationMethod = "symmetric"
PERCENTILE = 0.0
GRAPH_ORDER = (Precision.INT8, Precision.FP32, Precision.FP16)


def calibration_sentences(limit: int | None = None) -> list[str]:
    """The unique sentences of STS-B train in first-seen order (10,566), or the first ``limit`` of them."""
    seen = dict.fromkeys(s for p in read_sts("train") for s in (p.s1, p.s2))
    texts = list(seen)
    return texts if limit is None else texts[:limit]


def measure_ranges(
    folder: Path,
    graph: Precision | None = None,
    method: CalibrationMethod = METHOD,
    percentile: float = PERCENTILE,
    limit: int | None = None,
) -> OutputRanges:
    """Encode the calibration sentences with the artifact's ``graph`` (default: int8, else fp32, else fp16, the
    first present) through the runtime on the CPU and return the manifest entry."""
    manifest = read_manifest(folder)
    if graph is None:
        present = [p for p in GRAPH_ORDER if p in manifest.variants and (folder / p.file_name).is_file()]
        if not present:
            raise FileNotFoundError(f"{folder}: none of the manifest's graphs is present")
        graph = present[0]
    encoder = load(folder, provider="cpu", precision=graph.value, backend="onnxruntime")  # the CPU-independent vectors
    texts = calibration_sentences(limit)
    embeddings = encoder.encode(texts, batch_size=64)
    record = {
        "graph": graph.value,
        "graph_sha256": manifest.variants[graph].graph.sha256,
        "sentences": len(texts),
        "source": f"STS-B train, unique sentences ({SPLIT_FILES['train']})",
        "source_sha256": sha256_file(DATA_DIR / SPLIT_FILES["train"]),
        "method": method,
        "percentile": percentile,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return output_ranges(calibrate(embeddings, method, percentile), record)


def add_output_ranges(
    folder: Path,
    graph: Precision | None = None,
    method: CalibrationMethod = METHOD,
    percentile: float = PERCENTILE,
    limit: int | None = None,
) -> Manifest:
    """Measure the ranges and rewrite ``folder/manifest.json`` with them (atomically: a crash leaves the old one);
    the graphs and every other manifest field stay as they are."""
    manifest = replace(read_manifest(folder), output_ranges=measure_ranges(folder, graph, method, percentile, limit))
    tmp = folder / f".{MANIFEST_FILE}.tmp-{os.getpid()}"
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    tmp.replace(folder / MANIFEST_FILE)
    log.info("%s: output ranges from %s", folder, manifest.output_ranges.calibration if manifest.output_ranges else {})
    return manifest
