"""A corpus job: plan the input, encode it window by window, write one file or resumable Parquet shards."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import runtime
from runtime.corpus import inputs, state
from runtime.corpus.encoding import BadRows, ModelArgs, Progress, describe_model, encode_items, encode_shard, open_plan
from runtime.corpus.errors import CorpusError
from runtime.corpus.inputs import Columns, Plan
from runtime.corpus.outputs import SINKS, ShardInfo, Sink, check_sink_suffix, remove_stale
from runtime.quantization import CALIBRATED, check_output_precision

FOLDER_SUFFIXES = ("", ".parquet")

# Options that decide the output's bytes: fixed when a job starts, taken from the job when resuming.
DEFAULTS: dict[str, Any] = {
    "column": "text",
    "id_column": None,
    "input_format": None,
    "shard_rows": 102_400,  # 50 windows: shards of any multiple of the window hold the same vectors
    "window": 2048,  # texts in memory at once; bounds the job's peak RSS (docs/corpus.md, "Memory")
    "batch_size": 32,
    "skip_bad_rows": False,
    "output_precision": "float32",  # the vectors' type, as encode(precision=...) takes it
}
RAY_SHARDS_PER_ACTOR = 4  # default Ray shards: small enough that every actor gets several


@dataclass(frozen=True)
class JobResult:
    """What a job did: positions read, rows written, rows skipped; shards written now and found from before."""

    output: Path
    records: int
    rows: int
    bad_rows: int
    shards: int = 0
    resumed_shards: int = 0
    seconds: float = 0.0
    first_shard_seconds: float | None = None
    encoded: int = 0  # positions this run processed (not those of resumed shards)

    @property
    def texts_per_second(self) -> float:
        """Positions this run processed per second of wall time."""
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def encode_files(
    inputs_: Sequence[str | Path] | str | Path,
    output: str | Path,
    *,
    column: str | None = None,
    id_column: str | None = None,
    input_format: str | None = None,
    resume: bool = False,
    encoder: runtime.Encoder | None = None,
    model: str | Path | None = None,
    provider: str = "auto",
    precision: str | None = None,
    backend: str = "auto",
    threads: int | None = None,
    batch_size: int | None = None,
    window: int | None = None,
    shard_rows: int | None = None,
    skip_bad_rows: bool | None = None,
    progress: bool | None = None,
    ray: bool | str = False,
    actors: int | None = None,
    output_precision: str | None = None,
) -> JobResult:
    """Embed the texts of ``inputs_`` (files, folders, glob patterns, or "-" for stdin) into ``output``.

    ``output``: a ``.npy`` matrix or a ``.jsonl`` file (each written whole through a temporary file), or a folder of
    Parquet shards ``part-NNNNN.parquet`` (``id``, ``embedding``) with a ``_SUCCESS`` manifest written last. A folder
    job survives a crash: ``resume=True`` finishes it without redoing finished shards, byte for byte as an
    uninterrupted run, and refuses if the input, the model or an option that shapes the output changed.
    Options left at None take the job's value when resuming, else ``DEFAULTS``. Bad rows raise
    :class:`CorpusError` naming file and line, unless ``skip_bad_rows`` (then counted and logged).
    ``progress``: None shows a bar when stderr is a terminal. ``ray``: True (``ray.init()``, or the caller's
    session) or a cluster address runs the shards on a Ray Data actor pool of ``actors`` actors with ``threads``
    CPUs each (default: 1 thread, as many actors as the cluster has CPUs). ``output_precision``: the vectors' type
    as ``Encoder.encode(precision=...)`` names it (float32, int8, uint8, binary, ubinary; ``precision`` is the graph
    variant): .npy gets that dtype, Parquet ``fixed_size_list<float32 | int8 | uint8, width>`` (width = the
    dimension, or (dimension + 7) // 8 packed bytes), .jsonl integers.
    """
    started = time.perf_counter()
    specs = [inputs_] if isinstance(inputs_, (str, Path)) else list(inputs_)
    files = inputs.find_inputs(specs)
    out = Path(output)
    asked = {
        "column": column,
        "id_column": id_column,
        "input_format": input_format,
        "shard_rows": shard_rows,
        "window": window,
        "batch_size": batch_size,
        "skip_bad_rows": skip_bad_rows,
        "output_precision": None if output_precision is None else check_output_precision(output_precision),
    }
    for name, value in {
        "shard_rows": shard_rows,
        "window": window,
        "batch_size": batch_size,
        "actors": actors,
        "threads": threads,
    }.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if encoder is not None:
        args = ModelArgs(
            str(encoder.folder), encoder.device, encoder.precision.value, threads, encoder.decision.asked.value
        )
    else:
        args = ModelArgs(None if model is None else str(model), provider, precision, threads, backend)
    folder_output = _is_folder(output)
    _refuse_overwriting_inputs(files, out, folder_output)
    if not folder_output:
        check_sink_suffix(out)
        if resume or ray:
            raise CorpusError(f"{out}: only a folder of Parquet shards can be resumed or written by Ray")
        options = {k: DEFAULTS[k] if v is None else v for k, v in asked.items()}
        if options["skip_bad_rows"] and out.suffix.lower() == ".npy":
            raise CorpusError(
                f"{out}: rows of an .npy matrix carry no ids, so skipped rows could not be told apart; "
                "write .jsonl or a folder of shards to skip bad rows"
            )
        encoder = encoder or args.load()
        if options["output_precision"] not in encoder.output_precisions:
            raise CorpusError(_no_grid(encoder.folder, str(options["output_precision"])))
        return _file_job(files, out, options, encoder, progress, started)
    if files == [inputs.STDIN] and (resume or ray):
        raise CorpusError("stdin can be read only once: it cannot be resumed or sent to Ray; save it to a file")
    out.mkdir(parents=True, exist_ok=True)
    with state.exclusive(out):
        return _folder_job(files, out, asked, resume, encoder, args, progress, ray, actors, started)


def _is_folder(output: str | Path) -> bool:
    text = str(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or Path(text).suffix.lower() in FOLDER_SUFFIXES


def _refuse_overwriting_inputs(files: list[str], out: Path, folder_output: bool) -> None:
    target = out.resolve()
    for name in files:
        source = Path(name).resolve()
        if name != inputs.STDIN and (source == target or (folder_output and source.parent == target)):
            raise CorpusError(f"{out}: the output would overwrite or mix with the input {name}; choose another path")


def _file_job(
    files: list[str], out: Path, options: dict[str, Any], encoder: runtime.Encoder, show: bool | None, started: float
) -> JobResult:
    columns = Columns(options["column"], options["id_column"])
    sink: Sink = SINKS[out.suffix.lower()](out, encoder.manifest.dimension, options["output_precision"])
    bad = BadRows(options["skip_bad_rows"])
    try:
        with (
            open_plan(files, out.parent, columns, 1 << 62, options["input_format"]) as planned,
            contextlib.closing(planned.read(0, keep_fields=out.suffix.lower() == ".jsonl")) as items,
            _progress_bar(planned.records, 0, show) as bar,
        ):
            done = encode_items(items, encoder, options, sink.write, bad, bar)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return JobResult(out, done, sink.rows, bad.count, seconds=time.perf_counter() - started, encoded=done)


def _folder_job(
    files: list[str],
    folder: Path,
    asked: dict[str, Any],
    resume: bool,
    encoder: runtime.Encoder | None,
    args: ModelArgs,
    show: bool | None,
    ray: bool | str,
    actors: int | None,
    started: float,
) -> JobResult:
    previous = state.read_job(folder)
    state.refuse_foreign(folder, previous, resume)
    remove_stale(folder)
    # a job started before an option existed ran with its default
    options = {
        k: v if v is not None else (previous or {"options": DEFAULTS})["options"].get(k, DEFAULTS[k])
        for k, v in asked.items()
    }
    with contextlib.ExitStack() as stack:
        if ray:
            from runtime.corpus import ray_job

            cpus = stack.enter_context(ray_job.connected(ray))
            actors = actors or max(1, cpus // (args.threads or 1))
        adaptive = actors if ray and asked["shard_rows"] is None and previous is None else None
        planned = stack.enter_context(_plan_shards(files, folder, options, adaptive))
        if not ray:
            encoder = encoder or args.load()
        job = state.Job(_spec(planned, describe_model(encoder) if encoder else args.describe(), options))
        if previous is None:
            state.start(folder, job)
        elif why := state.why_not_resumable(previous, job.spec, asked):
            raise CorpusError(f"cannot resume {folder}: {why}; start a new output folder")
        done = state.finished_shards(folder, job)
        if len(done) == job.shards and (folder / state.SUCCESS_FILE).exists():
            summary = state.read_success(folder)
            return JobResult(folder, summary["records"], summary["rows"], summary["bad_rows"], job.shards, job.shards)
        todo = [k for k in range(job.shards) if k not in done]
        with _progress_bar(planned.records, sum(i.end - i.first for i in done.values()), show) as bar:
            if ray:
                assert actors is not None
                written = ray_job.run_shards(planned, todo, job.id, folder, args, options, actors, bar)
            else:
                assert encoder is not None
                written = _run_local(planned, todo, job.id, folder, encoder, options, bar)
    remove_stale(folder)  # what a killed Ray actor was writing when it died
    summary = state.succeed(folder, job, [done.get(k) or written[k][0] for k in range(job.shards)])
    first = min((t for _, t in written.values()), default=None)
    return JobResult(
        folder,
        summary["records"],
        summary["rows"],
        summary["bad_rows"],
        job.shards,
        len(done),
        time.perf_counter() - started,
        None if first is None else first - started,
        sum(info.end - info.first for info, _ in written.values()),
    )


@contextlib.contextmanager
def _plan_shards(files: list[str], folder: Path, options: dict[str, Any], actors: int | None) -> Iterator[Plan]:
    """Plan with ``options['shard_rows']``, or, given ``actors`` (a new Ray job without --shard-rows), with
    about ``RAY_SHARDS_PER_ACTOR`` shards per actor, in whole windows, at most the default size (options updated)."""
    columns = Columns(options["column"], options["id_column"])
    step = options["window"] if actors else options["shard_rows"]
    with open_plan(files, folder, columns, step, options["input_format"]) as planned:
        if actors:
            per_shard = -(-planned.records // (actors * RAY_SHARDS_PER_ACTOR))
            options["shard_rows"] = step * max(1, min(DEFAULTS["shard_rows"] // step, -(-per_shard // step)))
            planned = planned.coarsen(options["shard_rows"])
        yield planned


def _run_local(
    planned: Plan,
    todo: list[int],
    job: str,
    folder: Path,
    encoder: runtime.Encoder,
    options: dict[str, Any],
    bar: Progress,
) -> dict[int, tuple[ShardInfo, float]]:
    """Write the shards in order; returns each with the time (perf_counter) it was published."""
    bad = BadRows(options["skip_bad_rows"])
    return {k: (encode_shard(planned, k, job, folder, encoder, options, bar, bad), time.perf_counter()) for k in todo}


def _spec(planned: Plan, model: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The job's identity; the int8/uint8 grid is part of the model only for jobs that write those types."""
    model = dict(model)
    grid = model.pop("output_ranges_sha256", None)
    if options["output_precision"] in CALIBRATED:
        if grid is None:
            raise CorpusError(_no_grid(None, options["output_precision"]))
        model["output_ranges_sha256"] = grid
    return {
        "format": state.FORMAT,
        "input": {"fingerprint": planned.fingerprint, "files": [s.describe() for s in planned.sources]},
        "model": model,
        "options": options,
        "records": planned.records,
        "shard_count": -(-planned.records // planned.step),
        "id_type": planned.id_type,
    }


def _no_grid(folder: Path | None, precision: str) -> str:
    where = "the model's manifest" if folder is None else f"{folder}/manifest.json"
    return (
        f"{where} has no calibrated output ranges, so output precision {precision!r} is unavailable; add them with "
        "python -m export calibrate-outputs (float32, binary and ubinary need none)"
    )


@contextlib.contextmanager
def _progress_bar(total: int | None, initial: int, show: bool | None) -> Iterator[Progress]:
    """tqdm on stderr with rate and ETA; ``show=None`` shows it only when stderr is a terminal."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=initial,
        unit=" texts",
        dynamic_ncols=True,
        disable=None if show is None else not show,
        smoothing=0.1,
    )
    try:
        yield bar.update
    finally:
        bar.close()
