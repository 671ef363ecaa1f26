"""Check a finished folder job against its input: every input id exactly once, in order, and vectors the library
reproduces on a sample. Input and output are streamed side by side, so the check runs in bounded memory."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from runtime.artifact import sha256_file
from runtime.corpus import inputs, state
from runtime.corpus.encoding import ModelArgs, describe_model, open_plan, output_precision
from runtime.corpus.inputs import BadRow, Columns, Row
from runtime.corpus.outputs import SHARD_PREFIX, SHARD_SUFFIX, is_temporary
from runtime.quantization import OutputPrecision, output_dtype, output_width

MAX_PROBLEMS = 20
NORM_TOLERANCE = 1e-3
# Max abs difference a re-encoded sample may show: float32 and int8 inference are batch-invariant to 1e-5; a bf16
# path pads its batches, which may move a vector by up to 2e-3 (the bf16 gate, docs: backends).
TOLERANCE = 1e-5
BF16_TOLERANCE = 2e-3
# How to load the engines a job recorded (Encoder.backend) so that the same rule can be asked for again.
LOAD_BACKEND = {"onnxruntime": "onnxruntime", "openvino": "openvino", "onnxruntime+openvino": "auto"}


@dataclass
class CheckReport:
    """The checker's findings; ``ok`` when it found no problem."""

    output: str
    records: int = 0
    rows: int = 0
    bad_rows: int = 0
    shards: int = 0
    sampled: int = 0
    max_abs_diff: float | None = None
    min_cosine: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with ``ok``."""
        return {**asdict(self), "ok": self.ok}

    def problem(self, text: str) -> None:
        """Record a problem (the first ``MAX_PROBLEMS`` are kept)."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


def check(
    output: str | Path,
    inputs_: Sequence[str | Path] | str | Path,
    *,
    sample: int = 256,
    seed: int = 0,
    tolerance: float | None = None,
    encoder: runtime.Encoder | None = None,
    model: str | Path | None = None,
) -> CheckReport:
    """Verify ``output`` (a folder job with ``_SUCCESS``) against ``inputs_``.

    Checks that the input is the one the job read (fingerprint), that the shards on disk are exactly those listed,
    whole (size and sha256), cover the input's positions in order, and hold every good input row's id exactly once
    in input order and no other; that bad rows were skipped only if the job allowed it; that every vector is finite
    and unit length; and that ``sample`` random rows equal the library's vectors within ``tolerance`` (max abs;
    default 1e-5, or 2e-3 when the job's rule runs texts in bf16), computed under the rule the job recorded (a library
    whose rule differs, e.g. on another CPU class, is reported instead of compared).
    A job of a compact output type (int8, uint8, binary, ubinary) is checked code by code: each value must be one
    that the library's float vector, moved by at most ``tolerance`` per component, quantises to (``max_abs_diff``
    is then in code units, against ``encode(precision=...)``).
    """
    folder = Path(output)
    report = CheckReport(str(folder))
    summary = state.read_success(folder)
    options = summary["options"]
    shards = summary["shards"]
    report.shards = len(shards)
    _check_listing(folder, shards, summary["records"], report)
    if not report.ok:
        return report
    specs = [inputs_] if isinstance(inputs_, (str, Path)) else list(inputs_)
    files = inputs.find_inputs(specs)
    columns = Columns(options["column"], options["id_column"])
    with (
        tempfile.TemporaryDirectory() as spool,
        open_plan(files, Path(spool), columns, 1 << 62, options["input_format"]) as planned,
    ):
        if planned.fingerprint != summary["input"]["fingerprint"]:
            report.problem(
                f"the input is not the one the job read (fingerprint {planned.fingerprint[:12]}, "
                f"job {summary['input']['fingerprint'][:12]})"
            )
            return report
        positions = _sample_positions(planned.records, sample, seed)
        texts, vectors = _compare(folder, planned, shards, options, positions, report)
    precision = output_precision(options)
    report.records = planned.records
    if report.rows != summary["rows"] or report.bad_rows != summary["bad_rows"]:
        report.problem(
            f"_SUCCESS says {summary['rows']} rows and {summary['bad_rows']} bad rows; "
            f"the check counted {report.rows} and {report.bad_rows}"
        )
    if texts:
        _compare_sample(texts, np.stack(vectors), summary["model"], encoder, model, tolerance, precision, report)
    return report


def _check_listing(folder: Path, shards: list[dict[str, Any]], records: int, report: CheckReport) -> None:
    on_disk = {p.name for p in folder.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")}
    listed = [s["file"] for s in shards]
    for name in sorted(on_disk - set(listed)):
        report.problem(f"{name} is on disk but not listed in _SUCCESS")
    stale = sorted(p.name for p in folder.iterdir() if is_temporary(p.name))
    if stale:
        report.problem(f"temporary files left behind: {stale[:5]}")
    end = 0
    for index, info in enumerate(shards):
        path = folder / info["file"]
        if info["shard"] != index or info["first"] != end:
            report.problem(
                f"{info['file']}: shard {info['shard']} covers [{info['first']}, {info['end']}), "
                f"expected shard {index} starting at {end}"
            )
        end = info["end"]
        if not path.is_file():
            report.problem(f"{info['file']}: listed in _SUCCESS but missing")
        elif path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            report.problem(f"{info['file']}: size or sha256 differs from _SUCCESS (damaged or replaced)")
    if end != records:
        report.problem(f"shards cover positions [0, {end}), the job had {records}")


def _sample_positions(records: int, sample: int, seed: int) -> set[int]:
    if records == 0 or sample <= 0:
        return set()
    chosen = np.random.default_rng(seed).choice(records, size=min(sample, records), replace=False)
    return {int(p) for p in chosen}


def _shard_rows(path: Path) -> Iterator[tuple[Any, np.ndarray]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["id", "embedding"]):
        ids = batch.column(0).to_pylist()
        flat = batch.column(1).values.to_numpy(zero_copy_only=False)
        yield from zip(ids, flat.reshape(len(ids), -1), strict=True)


def _compare(
    folder: Path,
    planned: inputs.Plan,
    shards: list[dict[str, Any]],
    options: dict[str, Any],
    positions: set[int],
    report: CheckReport,
) -> tuple[list[str], list[np.ndarray]]:
    texts: list[str] = []
    vectors: list[np.ndarray] = []
    with contextlib.closing(planned.read(0)) as items:
        position = 0
        for info in shards:
            rows = _shard_rows(folder / info["file"])
            found = 0
            for position in range(info["first"], info["end"]):
                item = next(items)
                if isinstance(item, BadRow):
                    report.bad_rows += 1
                    if not options["skip_bad_rows"]:
                        report.problem(f"{item}: a bad row, but the job was not told to skip bad rows")
                if not isinstance(item, Row):
                    continue
                got = next(rows, None)
                if got is None:
                    report.problem(
                        f"{info['file']}: ends after {found} rows; position {position} (id {item.id!r}) is missing"
                    )
                    break
                found += 1
                ident, vector = got
                if ident != item.id or type(ident) is not type(item.id):
                    report.problem(
                        f"{info['file']}: row {found} has id {ident!r}; the input at position "
                        f"{position} has id {item.id!r}"
                    )
                if vector.dtype.kind == "f" and (
                    not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1) > NORM_TOLERANCE
                ):
                    report.problem(f"{info['file']}: row {found} (id {ident!r}) is not a finite unit vector")
                if position in positions:
                    texts.append(item.text)
                    vectors.append(np.array(vector))
            else:
                extra = sum(1 for _ in rows)
                if extra:
                    report.problem(f"{info['file']}: {extra} rows more than the input has for its positions")
            report.rows += found
            if found != info["rows"]:
                report.problem(f"{info['file']}: {found} rows match the input, _SUCCESS says {info['rows']}")
    return texts, vectors


def _compare_sample(
    texts: list[str],
    vectors: np.ndarray,
    job_model: dict[str, Any],
    encoder: runtime.Encoder | None,
    model: str | Path | None,
    tolerance: float | None,
    precision: OutputPrecision,
    report: CheckReport,
) -> None:
    if encoder is None:
        # Jobs recorded before backends existed ran on onnxruntime.
        backend = LOAD_BACKEND.get(job_model.get("backend", "onnxruntime"), "auto")
        args = ModelArgs(
            None if model is None else str(model), job_model["device"], job_model["precision"], None, backend
        )
        encoder = args.load()
    found = describe_model(encoder)
    if found["graph_sha256"] != job_model["graph_sha256"] or found["tokenizer_sha256"] != job_model["tokenizer_sha256"]:
        report.problem(
            f"the library's model ({found['name']}, graph sha256 {found['graph_sha256'][:12]}) is not "
            f"the job's (graph sha256 {job_model['graph_sha256'][:12]}): vectors not compared"
        )
        return
    rule = job_model.get("rule", f"onnxruntime {job_model['precision']}, every text")
    if found["rule"] != rule:
        report.problem(
            f"the job's vectors were computed under the rule {rule!r}; the library here runs {found['rule']!r}: "
            "vectors not compared (check where the job ran, or with an encoder loaded under its rule)"
        )
        return
    if tolerance is None:
        tolerance = BF16_TOLERANCE if "bf16" in rule else TOLERANCE
    if precision != "float32":
        _compare_codes(texts, vectors, encoder, tolerance, precision, report)
        return
    expected = encoder.encode(texts)
    report.sampled = len(texts)
    report.max_abs_diff = float(np.abs(expected - vectors).max())
    report.min_cosine = float(np.sum(expected * vectors, axis=1).min())
    if report.max_abs_diff > tolerance:
        report.problem(
            f"sampled vectors differ from the library's by up to {report.max_abs_diff:.3g} "
            f"(tolerance {tolerance:g}; min cosine {report.min_cosine:.7f})"
        )


def _compare_codes(
    texts: list[str],
    codes: np.ndarray,
    encoder: runtime.Encoder,
    tolerance: float,
    precision: OutputPrecision,
    report: CheckReport,
) -> None:
    """Each stored code must lie between the codes of the library's float vector moved by -tolerance and +tolerance
    (quantisation is monotone per component): a float difference of batching may move a value across one boundary,
    nothing else may."""
    width, dtype = output_width(precision, encoder.manifest.dimension), output_dtype(precision)
    if codes.shape[1] != width or codes.dtype != dtype:
        report.problem(f"vectors are {codes.dtype} x {codes.shape[1]}; a {precision} job writes {dtype} x {width}")
        return
    floats = encoder.encode(texts)

    def values(x: np.ndarray) -> np.ndarray:  # packed bits compared bit by bit (binary's bytes are ubinary's - 128)
        if precision in ("binary", "ubinary"):
            return np.unpackbits(x.view(np.uint8) ^ np.uint8(0x80 if precision == "binary" else 0), axis=1)
        return x.astype(np.int64)

    got, exact = values(codes), values(encoder.quantize(floats, precision))
    low, high = (values(encoder.quantize(floats + np.float32(d), precision)) for d in (-tolerance, tolerance))
    report.sampled = len(texts)
    report.max_abs_diff = float(np.abs(got.astype(np.int64) - exact).max())
    outside = int(((got < low) | (got > high)).sum())
    if outside:
        report.problem(
            f"{outside} sampled {precision} values differ from the library's codes by more than a float difference "
            f"of {tolerance:g} explains"
        )
