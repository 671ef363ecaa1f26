"""Corpus inputs: find the files, fingerprint and plan them in one pass, then read records back from any cut.

A *position* is one line of a .txt/.jsonl file or one row of a .csv/.parquet file, counted from 0 across all input
files in order. A position holds a :class:`Row` (id and text), a :class:`BadRow` (why it cannot be encoded, and
where) or nothing (a blank .jsonl line or an empty .csv line). Without an id column a row's id is its position.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from runtime.artifact import sha256_file
from runtime.corpus.errors import CorpusError

SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
STDIN = "-"

# A .csv text field may be a whole document; the csv module's default cap (131,072 characters) would turn it into a
# bad row. The limit is process-wide, so it is only ever raised.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))


@dataclass(frozen=True)
class Columns:
    """Which field holds the text and, optionally, the id."""

    text: str = "text"
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """A record to encode; ``fields`` is the whole record when the output keeps it (.jsonl output)."""

    id: int | str
    text: str
    fields: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BadRow:
    """A record that cannot be encoded: a missing column, a non-string value, invalid UTF-8 or JSON."""

    path: str
    line: int
    reason: str
    unit: str = ""  # "row " for Parquet, whose rows have no line numbers

    def __str__(self) -> str:
        return f"{self.path}:{self.unit}{self.line}: {self.reason}"


Item = Row | BadRow | None


@dataclass(frozen=True)
class Source:
    """One input file as planned: its kind, size, content hash and number of positions."""

    path: str
    kind: str
    bytes: int
    sha256: str
    records: int
    header: tuple[str, ...] = ()
    name: str = ""  # how messages name it, when not by ``path`` ("-" for stdin spooled to a file)

    @property
    def label(self) -> str:
        """The name messages use."""
        return self.name or self.path

    def describe(self) -> dict[str, Any]:
        """The JSON form kept in a job's record."""
        return {
            "path": self.label,
            "kind": self.kind,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "records": self.records,
        }


@dataclass(frozen=True)
class Cut:
    """Where a position starts: file index, byte offset (row index for Parquet) and 1-based line number."""

    file: int
    offset: int
    line: int


@dataclass(frozen=True)
class Plan:
    """The inputs fingerprinted, with a cut every ``step`` positions so any shard can be read on its own."""

    sources: tuple[Source, ...]
    columns: Columns
    step: int
    cuts: tuple[Cut, ...]
    id_type: str  # "int64" (positions or integer ids) or "string"

    @property
    def records(self) -> int:
        """Positions in the whole input."""
        return sum(s.records for s in self.sources)

    @property
    def fingerprint(self) -> str:
        """sha256 over the kinds and contents of the input files, in order (not their names)."""
        canon = json.dumps([[s.kind, s.bytes, s.sha256] for s in self.sources])
        return hashlib.sha256(canon.encode()).hexdigest()

    def coarsen(self, step: int) -> Plan:
        """The same plan with shards of ``step`` positions, a multiple of this plan's step."""
        if step < self.step or step % self.step:
            raise ValueError(f"step {step} is not a multiple of {self.step}")
        return replace(self, step=step, cuts=self.cuts[:: step // self.step])

    def read(self, start: int, keep_fields: bool = False) -> Generator[Item, None, None]:
        """Items from position ``start`` (a multiple of ``step``) to the end of the input."""
        if start >= self.records:
            return
        if start % self.step or start // self.step >= len(self.cuts):
            raise ValueError(f"position {start} is not a planned cut (step {self.step}, {len(self.cuts)} cuts)")
        cut = self.cuts[start // self.step]
        for index in range(cut.file, len(self.sources)):
            if index == cut.file:
                first, position = cut, start
            else:
                first, position = Cut(index, 0, 1), sum(s.records for s in self.sources[:index])
            yield from read_file(self.sources[index], self.columns, self.id_type, first, position, keep_fields)


def find_inputs(specs: Sequence[str | Path]) -> list[str]:
    """Expand files, folders (their .txt/.jsonl/.csv/.parquet files, not recursive, skipping ``_*`` and ``.*``) and
    glob patterns into an ordered list of files; ``-`` is stdin and must stand alone."""
    found: list[str] = []
    for spec in map(str, specs):
        if spec == STDIN:
            if len(specs) > 1:
                raise CorpusError("stdin ('-') cannot be combined with other inputs")
            return [STDIN]
        path = Path(spec)
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in SUFFIXES and p.is_file() and not p.name.startswith(("_", "."))
            )
            if not files:
                raise CorpusError(f"{path}: folder holds no {'/'.join(SUFFIXES)} files")
            found.extend(map(str, files))
        elif path.is_file():
            found.append(spec)
        elif glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec) if Path(p).is_file())
            if not matches:
                raise CorpusError(f"{spec}: pattern matches no file")
            found.extend(matches)
        else:
            raise CorpusError(f"{spec}: no such file or folder")
    seen: set[str] = set()
    for name in found:
        key = str(Path(name).resolve())
        if key in seen:
            raise CorpusError(f"{name}: listed twice in the input")
        seen.add(key)
    return found


def kind_of(path: str, input_format: str | None) -> str:
    """The input kind from ``input_format`` or the file's suffix (stdin: txt unless told)."""
    if input_format is not None:
        if input_format not in SUFFIXES.values():
            raise CorpusError(f"unknown input format {input_format!r} (use {', '.join(SUFFIXES.values())})")
        kind = input_format
    elif path == STDIN:
        kind = "txt"
    else:
        suffix = Path(path).suffix.lower()
        if suffix not in SUFFIXES:
            raise CorpusError(f"{path}: unsupported input type {suffix!r} (use {', '.join(SUFFIXES)})")
        kind = SUFFIXES[suffix]
    return kind


def plan(files: Sequence[str], columns: Columns, step: int, input_format: str | None = None) -> Plan:
    """Read every input file once: hash it, count its positions and note a cut every ``step`` positions."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    sources: list[Source] = []
    cuts: list[Cut] = []
    id_types: list[str] = []
    for index, name in enumerate(files):
        kind = kind_of(name, input_format)
        if columns.id is not None and kind == "txt":
            raise CorpusError(f"{name}: a .txt file has no columns; --id-column needs .jsonl, .csv or .parquet")
        first = sum(s.records for s in sources)
        scan = _SCANNERS[kind]
        source, id_type = scan(Path(name).resolve(), index, first, step, columns, cuts)
        sources.append(replace(source, name=name))  # read by absolute path (Ray workers), named as given
        if id_type is not None:
            id_types.append(id_type)
    if columns.id is None:
        id_type = "int64"
    elif len(set(id_types)) > 1:
        raise CorpusError(f"id column {columns.id!r} holds integers in some files and strings in others")
    else:
        id_type = id_types[0] if id_types else "string"
    return Plan(tuple(sources), columns, step, tuple(cuts), id_type)


def spool_stdin(folder: Path, name: str) -> Path:
    """Copy stdin into a hidden file in ``folder`` (removed by the caller), so it can be planned like a file."""
    path = folder / f".{name}.tmp-stdin-{os.getpid()}"
    with path.open("wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
    return path


def read_file(
    source: Source, columns: Columns, id_type: str, cut: Cut, position: int, keep_fields: bool = False
) -> Iterator[Item]:
    """Items of one planned file from ``cut`` on; ``position`` is the global position of the item at the cut."""
    reader = _Reader(source, columns, id_type, keep_fields)
    if source.kind == "parquet":
        yield from reader.parquet_items(cut, position)
        return
    with open(source.path, "rb") as f:
        f.seek(cut.offset)
        yield from reader.items(f, cut, position)


# ---- planning scans: one pass per file, hashing as it reads ----


def _scan_lines(
    path: Path, index: int, first: int, step: int, columns: Columns, cuts: list[Cut]
) -> tuple[Source, str | None]:
    digest = hashlib.sha256()
    offset = count = 0
    id_type = None
    with path.open("rb") as f:
        for line in f:
            if (first + count) % step == 0:
                cuts.append(Cut(index, offset, count + 1))
            if id_type is None and columns.id is not None:
                id_type = _json_id_type(line, columns.id)
            digest.update(line)
            offset += len(line)
            count += 1
    return Source(str(path), "txt", offset, digest.hexdigest(), count), id_type


def _scan_txt(
    path: Path, index: int, first: int, step: int, columns: Columns, cuts: list[Cut]
) -> tuple[Source, str | None]:
    source, _ = _scan_lines(path, index, first, step, Columns(columns.text), cuts)
    return _with_kind(source, "txt"), None


def _scan_jsonl(
    path: Path, index: int, first: int, step: int, columns: Columns, cuts: list[Cut]
) -> tuple[Source, str | None]:
    source, id_type = _scan_lines(path, index, first, step, columns, cuts)
    return _with_kind(source, "jsonl"), id_type


def _with_kind(source: Source, kind: str) -> Source:
    return Source(source.path, kind, source.bytes, source.sha256, source.records, source.header)


def _json_id_type(line: bytes, key: str) -> str | None:
    try:
        value = json.loads(line)[key]
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    if isinstance(value, bool):
        return None
    return "int64" if isinstance(value, int) else "string" if isinstance(value, str) else None


def _scan_csv(
    path: Path, index: int, first: int, step: int, columns: Columns, cuts: list[Cut]
) -> tuple[Source, str | None]:
    digest = hashlib.sha256()
    count = 0
    with path.open("rb") as f:
        lines = _Lines(f, 0, 0, digest)
        header = _csv_header(lines, path, columns)
        # csv.reader pulls one line at a time and stops at the end of a row, so the counters mark row starts.
        start, line = lines.offset, lines.line + 1
        for _ in _csv_rows(lines):
            if (first + count) % step == 0:
                cuts.append(Cut(index, start, line))
            count += 1
            start, line = lines.offset, lines.line + 1
    return Source(str(path), "csv", lines.offset, digest.hexdigest(), count, header), "string"


def _csv_rows(lines: _Lines) -> Iterator[list[str] | csv.Error]:
    """csv.reader that yields a malformed row's csv.Error as one item instead of stopping."""
    reader = csv.reader(lines)
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield err


def _csv_header(lines: _Lines, path: Path, columns: Columns) -> tuple[str, ...]:
    try:
        header = next(csv.reader(lines))
    except StopIteration:
        return ()
    except csv.Error as err:
        raise CorpusError(f"{path}:1: malformed CSV header: {err}") from err
    for name in (columns.text, columns.id):
        if name is not None and name not in header:
            raise CorpusError(f"{path}: no column {name!r} (columns: {header}); choose one with --column/--id-column")
    return tuple(header)


def _scan_parquet(
    path: Path, index: int, first: int, step: int, columns: Columns, cuts: list[Cut]
) -> tuple[Source, str | None]:
    pq = _pyarrow_parquet()
    import pyarrow as pa

    try:
        rows = pq.read_metadata(path).num_rows
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise CorpusError(f"{path}: not a readable Parquet file: {err}") from err
    id_type = None
    for name in (columns.text, columns.id):
        if name is None:
            continue
        if name not in schema.names:
            raise CorpusError(f"{path}: no column {name!r} (columns: {schema.names}); choose one with --column")
        kind = schema.field(name).type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if name == columns.text and not text:
            raise CorpusError(f"{path}: column {name!r} is {kind}, expected strings")
        if name == columns.id:
            if not (text or pa.types.is_integer(kind)):
                raise CorpusError(f"{path}: id column {name!r} is {kind}, expected integers or strings")
            id_type = "string" if text else "int64"
    cuts.extend(Cut(index, row, row + 1) for row in range(-first % step, rows, step))
    return Source(str(path), "parquet", path.stat().st_size, sha256_file(path), rows), id_type


_SCANNERS = {"txt": _scan_txt, "jsonl": _scan_jsonl, "csv": _scan_csv, "parquet": _scan_parquet}


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise CorpusError("Parquet needs pyarrow: pip install 'minilm-stsb-onnx[corpus]'") from err
    return pq


# ---- reading records back ----


class _Lines:
    """Lines of a binary stream decoded for csv.reader, counting the bytes and lines consumed so far."""

    def __init__(self, stream: IO[bytes], offset: int, line: int, hasher: Any = None) -> None:
        self.stream, self.offset, self.line, self.hasher = stream, offset, line, hasher

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self.stream.readline()
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        self.line += 1
        if self.hasher is not None:
            self.hasher.update(raw)
        # Invalid UTF-8 survives as lone surrogates, so one bad byte spoils one row, not the whole read.
        return raw.decode("utf-8", "surrogateescape")


class _Reader:
    """Turns the lines or rows of one source into items; every position yields exactly one item."""

    def __init__(self, source: Source, columns: Columns, id_type: str, keep_fields: bool) -> None:
        self.source, self.columns, self.id_type, self.keep = source, columns, id_type, keep_fields

    def bad(self, line: int, reason: str) -> BadRow:
        return BadRow(self.source.label, line, reason, "row " if self.source.kind == "parquet" else "")

    def items(self, stream: IO[bytes], cut: Cut, position: int) -> Iterator[Item]:
        if self.source.kind == "csv":
            yield from self._csv_items(stream, cut, position)
            return
        parse = self._txt if self.source.kind == "txt" else self._jsonl
        line = cut.line
        for raw in stream:
            yield parse(raw, line, position)
            line += 1
            position += 1

    def _txt(self, raw: bytes, line: int, position: int) -> Item:
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return self.bad(line, f"invalid UTF-8 at byte {err.start}")
        return Row(position, text, {"text": text} if self.keep else None)

    def _jsonl(self, raw: bytes, line: int, position: int) -> Item:
        if not raw.strip():
            return None
        try:
            record = json.loads(raw)
        except UnicodeDecodeError as err:
            return self.bad(line, f"invalid UTF-8 at byte {err.start}")
        except json.JSONDecodeError as err:
            return self.bad(line, f"not valid JSON: {err}")
        if not isinstance(record, dict):
            return self.bad(line, f"expected a JSON object, got {type(record).__name__}")
        return self._record(record, line, position)

    def _record(self, record: dict[str, Any], line: int, position: int) -> Item:
        name = self.columns.text
        if name not in record:
            return self.bad(line, f"no field {name!r}")
        text = record[name]
        if not isinstance(text, str):
            return self.bad(line, f"field {name!r} is {_type(text)}, expected a string")
        if self.source.kind == "csv" and not _valid_utf8(text):
            return self.bad(line, f"field {name!r} is not valid UTF-8")
        ident: int | str = position
        if self.columns.id is not None:
            value = record.get(self.columns.id)
            problem = _id_problem(value, self.id_type)
            if problem:
                return self.bad(line, f"id field {self.columns.id!r} {problem}")
            ident = value  # type: ignore[assignment]
        return Row(ident, text, record if self.keep else None)

    def _csv_items(self, stream: IO[bytes], cut: Cut, position: int) -> Iterator[Item]:
        header = self.source.header
        lines = _Lines(stream, cut.offset, cut.line - 1)
        if cut.offset == 0:
            header = _csv_header(lines, Path(self.source.label), self.columns)
        if not header:
            return
        text_at = header.index(self.columns.text)
        line = lines.line + 1
        for row in _csv_rows(lines):
            if isinstance(row, csv.Error):
                yield self.bad(line, f"malformed CSV: {row}")
            elif not row:
                yield None
            elif len(row) <= text_at:
                yield self.bad(line, f"row has {len(row)} fields, no value for column {self.columns.text!r}")
            else:
                yield self._record(dict(zip(header, row, strict=False)), line, position)
            line = lines.line + 1
            position += 1

    def parquet_items(self, cut: Cut, position: int) -> Iterator[Item]:
        meta = _pyarrow_parquet().ParquetFile(self.source.path)
        names = [c for c in (self.columns.text, self.columns.id) if c is not None]
        groups: list[int] = []
        row = 0  # the row groups from the one holding the cut, and the first row they hold
        for g in range(meta.metadata.num_row_groups):
            size = meta.metadata.row_group(g).num_rows
            if groups or row + size > cut.offset:
                groups.append(g)
            else:
                row += size
        for batch in meta.iter_batches(batch_size=4096, row_groups=groups, columns=names):
            for record in batch.to_pylist():
                row += 1
                if row <= cut.offset:
                    continue
                if record[self.columns.text] is None:
                    yield self.bad(row, f"column {self.columns.text!r} is null")
                else:
                    yield self._record(record, row, position)
                position += 1


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _id_problem(value: object, id_type: str) -> str | None:
    if value is None:
        return "is missing or null"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"is {_type(value)}, expected an integer or string"
    kind = "int64" if isinstance(value, int) else "string"
    if kind != id_type:
        expected = "an integer" if id_type == "int64" else "a string"
        return f"is {_type(value)}, expected {expected} like the rest of the input"
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
        return "does not fit in 64 bits"
    if isinstance(value, str) and not _valid_utf8(value):
        return "is not valid UTF-8"
    return None


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__
