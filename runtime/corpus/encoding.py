"""What a local job, a Ray actor and the checker share: how to load and describe the model, and how to encode a
run of input positions window by window (into a published shard, or any writer).

This module sits below job.py and ray_job.py, which both import it; it imports neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from runtime.artifact import default_artifact_dir, read_manifest
from runtime.backends import decide
from runtime.corpus import inputs
from runtime.corpus.errors import CorpusError
from runtime.corpus.inputs import BadRow, Columns, Item, Plan, Row
from runtime.corpus.outputs import ShardInfo, ShardWriter
from runtime.quantization import OutputPrecision, check_output_precision
from runtime.session import Provider

LOGGED_BAD_ROWS = 100  # skipped rows logged one by one; the rest are only counted

log = logging.getLogger("runtime.corpus")
Progress = Callable[[int], object]


@dataclass(frozen=True)
class ModelArgs:
    """How to load the model, so that Ray actors and the checker load the same one again."""

    path: str | None = None
    provider: str = "auto"
    precision: str | None = None
    threads: int | None = None
    backend: str = "auto"

    def load(self, threads: int | None = None) -> runtime.Encoder:
        """Load the encoder (``threads`` overrides the intra-op thread count)."""
        return runtime.load(self.path, self.provider, self.precision, threads or self.threads, self.backend)

    def describe(self) -> dict[str, Any]:
        """What :func:`describe_model` would say of the loaded encoder, without building a session."""
        folder = default_artifact_dir() if self.path is None else Path(self.path)
        manifest = read_manifest(folder)
        backend = runtime._choice(runtime.Backend, self.backend, "backend")
        decision = decide(manifest, folder, Provider(self.provider), runtime._precision(self.precision), backend)
        return _model_record(manifest, decision.precision, decision.device, decision.backend, decision.rule)


def describe_model(encoder: runtime.Encoder) -> dict[str, Any]:
    """The model as a job records it: a change in any of these makes a job refuse to resume."""
    return _model_record(encoder.manifest, encoder.precision, encoder.device, encoder.backend, encoder.rule)


def output_precision(options: dict[str, Any]) -> OutputPrecision:
    """A job's output type (jobs started before the option existed wrote float32)."""
    return check_output_precision(options.get("output_precision", "float32"))


def _model_record(
    manifest: runtime.Manifest, precision: runtime.Precision, device: str, backend: str, rule: str
) -> dict[str, Any]:
    ranges = manifest.output_ranges
    grid = None if ranges is None else hashlib.sha256(json.dumps([ranges.low, ranges.high]).encode()).hexdigest()
    return {
        "name": manifest.name,
        "precision": precision.value,
        "device": device,
        "backend": backend,
        "rule": rule,  # which engine embeds which texts (Encoder.rule): engines give close, not identical, vectors
        "graph_sha256": manifest.variants[precision].graph.sha256,
        "tokenizer_sha256": manifest.tokenizer.sha256,
        "dimension": manifest.dimension,
        "max_seq_length": manifest.max_seq_length,
        "output_ranges_sha256": grid,  # the int8/uint8 grid; a job's record keeps it only when it writes those types
    }


class BadRows:
    """Raises on a bad row or, when skipping, counts it and logs the first ``LOGGED_BAD_ROWS``."""

    def __init__(self, skip: bool) -> None:
        self.skip, self.count = skip, 0

    def __call__(self, bad: BadRow) -> None:
        if not self.skip:
            raise CorpusError(f"{bad} (pass --skip-bad-rows to skip such rows)")
        self.count += 1
        if self.count <= LOGGED_BAD_ROWS:
            log.warning("skipped bad row %s", bad)
        elif self.count == LOGGED_BAD_ROWS + 1:
            log.warning("further bad rows are skipped and counted, not logged")


def encode_items(
    items: Iterator[Item],
    encoder: runtime.Encoder,
    options: dict[str, Any],
    write: Callable[[list[Row], np.ndarray], None],
    bad: BadRows,
    progress: Progress,
) -> int:
    """Encode ``items`` in windows of ``options['window']`` positions, in order; returns the positions read."""
    done = 0
    while chunk := list(itertools.islice(items, options["window"])):
        rows = []
        for item in chunk:
            if isinstance(item, Row):
                rows.append(item)
            elif item is not None:
                bad(item)
        if rows:
            # Encoder.encode sorts by length within the window and returns the rows' vectors in input order.
            texts = [r.text for r in rows]
            write(rows, encoder.encode(texts, batch_size=options["batch_size"], precision=output_precision(options)))
        done += len(chunk)
        progress(len(chunk))
    return done


def encode_shard(
    plan: Plan,
    index: int,
    job: str,
    folder: Path,
    encoder: runtime.Encoder,
    options: dict[str, Any],
    progress: Progress,
    bad: BadRows | None = None,
) -> ShardInfo:
    """Encode positions [index * step, (index + 1) * step) into ``part-<index>.parquet``, published whole.

    A shard's bytes depend only on the plan, the options and the model, so any process can (re)write it.
    """
    first = index * plan.step
    end = min(first + plan.step, plan.records)
    bad = bad if bad is not None else BadRows(options["skip_bad_rows"])
    before = bad.count
    info = ShardInfo(index, first, end, 0, 0, job)
    writer = ShardWriter(folder, info, plan.id_type, encoder.manifest.dimension, output_precision(options))
    try:
        with contextlib.closing(plan.read(first)) as items:
            encode_items(itertools.islice(items, end - first), encoder, options, writer.write, bad, progress)
        return writer.commit(bad.count - before)
    except BaseException:
        writer.abort()
        raise


@contextlib.contextmanager
def open_plan(files: list[str], spool_dir: Path, columns: Columns, step: int, kind: str | None) -> Iterator[Plan]:
    """Plan the input; stdin is first copied to a hidden file in ``spool_dir``, removed afterwards."""
    if files != [inputs.STDIN]:
        yield inputs.plan(files, columns, step, kind)
        return
    spool = inputs.spool_stdin(spool_dir, "stdin")
    try:
        planned = inputs.plan([str(spool)], columns, step, kind or "txt")
        yield replace(planned, sources=tuple(replace(s, name=inputs.STDIN) for s in planned.sources))
    finally:
        spool.unlink(missing_ok=True)
