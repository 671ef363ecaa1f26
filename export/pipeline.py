"""The export run: trace, fuse, quantise, validate, then publish the artifact folder atomically."""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from export.calibrate import measure_ranges
from export.data import DATA_DIR, SPLIT_FILES, StsPair, gold_scores, pair_texts, read_sts, score_stacked
from export.deps import require
from export.graph import export_onnx, load_sentence_transformer
from export.optimize import convert_fp16, fuse
from export.publish import staged
from export.quantize import Feeds, Int8Settings, quantize_int8
from export.train import TRAIN_REPORT
from export.validate import Gates, VariantCheck, check_variant, gate_failure
from runtime.artifact import TOKENIZER_FILE, FileEntry, Manifest, Precision, Variant, sha256_file
from runtime.cpu import cpu_model, isa_class, isa_flags

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime", "tokenizers", "numpy")


@dataclass(frozen=True)
class ExportOptions:
    """What to build and how strictly to check it."""

    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8, Precision.FP16)
    int8: Int8Settings = field(default_factory=Int8Settings)
    gates: Gates = field(default_factory=Gates)
    dev_pairs: list[StsPair] | None = field(default=None, hash=False)
    output_calibration_sentences: int | None = None  # None: all unique STS-B train sentences


def run_export(model_dir: Path, out_dir: Path, options: ExportOptions = ExportOptions()) -> Manifest:
    """Export ``model_dir`` (a sentence-transformers folder) into ``out_dir``; failures leave ``out_dir`` untouched."""
    if Precision.FP32 not in options.precisions:
        raise ValueError("fp32 is the reference every other variant is derived from and judged against")
    start = time.perf_counter()
    with staged(out_dir) as tmp:
        manifest = _build(model_dir, tmp, options, start)
    return manifest


def _build(model_dir: Path, tmp: Path, options: ExportOptions, start: float) -> Manifest:
    model = load_sentence_transformer(model_dir)
    _write_tokenizer(model_dir, tmp / TOKENIZER_FILE, model.max_seq_length)
    settings = _write_graphs(model, tmp, options)
    pairs = options.dev_pairs if options.dev_pairs is not None else read_sts("dev")
    reference = _pytorch_reference(model, pairs)
    torch_score = score_stacked(reference, gold_scores(pairs))

    def manifest_of(checks: dict[Precision, VariantCheck]) -> Manifest:
        variants = {
            p: Variant(p, FileEntry.of(tmp / p.file_name), checks[p].as_dict() if p in checks else {}, settings[p])
            for p in settings
        }
        return Manifest(
            name=model_dir.name,
            dimension=model[0].auto_model.config.hidden_size,
            max_seq_length=model.max_seq_length,
            tokenizer=FileEntry.of(tmp / TOKENIZER_FILE),
            variants=variants,
            provenance=_provenance(model_dir, torch_score.spearman, torch_score.pearson, len(reference), start),
        )

    manifest_of({}).write(tmp)  # the runtime validates the variants through this manifest
    checks = _validate(tmp, settings, reference, pairs, options.gates)
    for precision in [p for p in settings if p not in checks]:
        (tmp / precision.file_name).unlink()
        del settings[precision]
    # int8/uint8 output ranges from the vectors the written graphs give (the int8 graph's when it passed)
    ranges = measure_ranges(tmp, limit=options.output_calibration_sentences)
    manifest = replace(manifest_of(checks), output_ranges=ranges)
    manifest.write(tmp)
    return manifest


def _write_graphs(model: Any, tmp: Path, options: ExportOptions) -> dict[Precision, dict[str, Any]]:
    """Trace once, then write each requested variant; return the settings that made each."""
    config = model[0].auto_model.config
    heads, hidden = config.num_attention_heads, config.hidden_size
    raw = tmp / "model.traced.onnx"
    export_onnx(model, raw)
    # CPU graphs keep residual Add + LayerNormalization unfused (faster on the CPU provider, see optimize.fuse)
    fusions = fuse(raw, tmp / Precision.FP32.file_name, heads, hidden, skip_layer_norm=False)
    log.info("fusions: %s", fusions)
    settings: dict[Precision, dict[str, Any]] = {Precision.FP32: {"fusions": fusions}}
    if Precision.INT8 in options.precisions:
        settings[Precision.INT8] = _write_int8(raw, tmp, heads, hidden, options.int8)
    if Precision.FP16 in options.precisions:
        gpu_fused = tmp / "model.gpu.onnx"
        fp16_fusions = fuse(raw, gpu_fused, heads, hidden)
        convert_fp16(gpu_fused, tmp / Precision.FP16.file_name)
        gpu_fused.unlink()
        settings[Precision.FP16] = {"fusions": fp16_fusions, "keep_io_types": True}
    raw.unlink()
    return settings


def _write_int8(raw: Path, tmp: Path, heads: int, hidden: int, int8: Int8Settings) -> dict[str, Any]:
    multi_head = tmp / "model.mha.onnx"
    fusions = fuse(raw, multi_head, heads, hidden, multi_head=True, skip_layer_norm=False)
    calibration = _calibration_feeds(tmp / TOKENIZER_FILE, int8.calibration_sentences)
    counts = quantize_int8(multi_head, tmp / Precision.INT8.file_name, calibration, int8)
    multi_head.unlink()
    return {"fusions": fusions, **counts, "quantization": int8.as_dict()}


def _pytorch_reference(model: Any, pairs: list[StsPair]) -> np.ndarray:
    """PyTorch embeddings of every s1, then every s2: what each variant is compared with."""
    embeddings = model.encode(pair_texts(pairs), batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    return np.asarray(embeddings)


def _validate(
    tmp: Path, settings: dict[Precision, Any], reference: np.ndarray, pairs: list[StsPair], gates: Gates
) -> dict[Precision, VariantCheck]:
    """Check every variant; fp32 failing aborts, another variant failing is dropped."""
    checks: dict[Precision, VariantCheck] = {}
    for precision in sorted(settings, key=lambda p: p is not Precision.FP32):
        check = check_variant(tmp, precision, reference, pairs)
        failure = gate_failure(precision, check, checks.get(Precision.FP32), gates)
        log.info("%s: %s%s", precision.value, check.as_dict(), f" FAILED: {failure}" if failure else "")
        if failure and precision is Precision.FP32:
            raise RuntimeError(f"export failed its parity gate: {failure}")
        if failure:
            log.warning("%s variant not written: %s", precision.value, failure)
            continue
        checks[precision] = check
    return checks


def _calibration_feeds(tokenizer_json: Path, count: int) -> Iterator[Feeds]:
    """One unpadded batch per sentence from the start of STS-B train (never dev, which judges the result)."""
    tokenizer = require("tokenizers").Tokenizer.from_file(str(tokenizer_json))
    pairs = read_sts("train")[: (count + 1) // 2]
    for text in [t for p in pairs for t in (p.s1, p.s2)][:count]:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        yield {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _write_tokenizer(model_dir: Path, dst: Path, max_seq_length: int) -> None:
    """Copy tokenizer.json with truncation at max_seq_length and no fixed padding (the base file pads to 128)."""
    tokenizers = require("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.save(str(dst))


def _provenance(model_dir: Path, spearman: float, pearson: float, n_sentences: int, start: float) -> dict[str, Any]:
    report_path = model_dir / TRAIN_REPORT
    train = json.loads(report_path.read_text()) if report_path.is_file() else None
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_model": str(model_dir),
        "training": train,
        "data": {split: sha256_file(DATA_DIR / name) for split, name in SPLIT_FILES.items()},
        "pytorch_reference": {
            "dev_spearman": round(spearman, 6),
            "dev_pearson": round(pearson, 6),
            "sentences": n_sentences,
        },
        "export_seconds": round(time.perf_counter() - start, 1),
        "cpu": {"model": cpu_model(), "isa_class": isa_class(), "isa_flags": list(isa_flags())},
        "versions": {lib: _version(lib) for lib in LIBRARIES} | {"python": platform.python_version()},
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"
