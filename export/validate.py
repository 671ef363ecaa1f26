"""Parity and accuracy gates: every variant is checked through the runtime, the code path users run."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from export.data import StsPair, cosines, gold_scores, pair_texts, score_stacked
from export.reference import reference_artifact
from runtime import Precision, load


@dataclass(frozen=True)
class Gates:
    """Thresholds a variant must meet to be written (defaults from the export issue)."""

    fp32_min_cosine: float = 0.99999
    int8_max_spearman_drop: float = 0.001
    int8_min_cosine: float = 0.99
    int8_max_exact_diff: float = 1e-5  # per dimension, against the exact-integer reference on the same CPU
    fp16_min_cosine: float = 0.999
    fp16_max_spearman_drop: float = 0.002


@dataclass(frozen=True)
class VariantCheck:
    """How one graph variant compares with PyTorch on the dev sentences."""

    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    dev_spearman: float
    dev_pearson: float
    max_abs_diff_to_exact: float | None = None  # int8 only: vs its exact-integer reference (export.reference)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items() if v is not None}


def compare(embeddings: np.ndarray, reference: np.ndarray, pairs: list[StsPair]) -> VariantCheck:
    """Row-wise cosine to the reference and STS metrics; ``embeddings`` rows are s1 of all pairs, then s2."""
    cos = cosines(embeddings, reference)
    score = score_stacked(embeddings, gold_scores(pairs))
    return VariantCheck(
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(embeddings - reference).max()),
        dev_spearman=score.spearman,
        dev_pearson=score.pearson,
    )


def check_variant(folder: Path, precision: Precision, reference: np.ndarray, pairs: list[StsPair]) -> VariantCheck:
    """Encode the dev sentences with the runtime on CPU (onnxruntime, the portable path the artifact ships for) and
    compare them with the PyTorch reference; int8 is also compared with its exact-integer reference run on this CPU,
    which exposes integer kernels that lose precision."""
    encoder = load(folder, provider="cpu", precision=precision.value, backend="onnxruntime")
    texts = pair_texts(pairs)
    embeddings = encoder.encode(texts, batch_size=32)
    check = compare(embeddings, reference, pairs)
    if precision is not Precision.INT8:
        return check
    with tempfile.TemporaryDirectory(prefix="exact-") as tmp:
        exact = load(reference_artifact(folder, Path(tmp)), provider="cpu", precision="int8", backend="onnxruntime")
        diff = float(np.abs(embeddings - exact.encode(texts, batch_size=32)).max())
    return replace(check, max_abs_diff_to_exact=diff)


def gate_failure(precision: Precision, check: VariantCheck, fp32: VariantCheck | None, gates: Gates) -> str | None:
    """Why ``check`` fails its gate, or None when it passes."""
    if precision is Precision.FP32:
        if check.min_cosine < gates.fp32_min_cosine:
            return f"fp32 min cosine {check.min_cosine:.7f} < {gates.fp32_min_cosine}"
        return None
    if fp32 is None:
        return f"{precision.value} cannot be judged without a passing fp32 reference"
    drop = fp32.dev_spearman - check.dev_spearman
    if precision is Precision.INT8:
        if drop > gates.int8_max_spearman_drop:
            limit = gates.int8_max_spearman_drop
            return f"int8 dev spearman {check.dev_spearman:.4f} is {drop:.4f} below fp32 (max {limit})"
        if check.min_cosine < gates.int8_min_cosine:
            return f"int8 min cosine {check.min_cosine:.5f} < {gates.int8_min_cosine}"
        exact = check.max_abs_diff_to_exact
        if exact is not None and exact > gates.int8_max_exact_diff:
            return (
                f"int8 differs from its exact-integer reference by {exact:.2e} > {gates.int8_max_exact_diff:.0e} on "
                "this CPU: its integer kernels lost precision (saturation?)"
            )
    if precision is Precision.FP16:
        if check.min_cosine < gates.fp16_min_cosine:
            return f"fp16 min cosine {check.min_cosine:.5f} < {gates.fp16_min_cosine}"
        if drop > gates.fp16_max_spearman_drop:
            limit = gates.fp16_max_spearman_drop
            return f"fp16 dev spearman {check.dev_spearman:.4f} is {drop:.4f} below fp32 (max {limit})"
    return None
