"""Corpus outputs, each written to a temporary name and renamed when whole: .npy, .jsonl, Parquet shards."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from runtime.artifact import sha256_file
from runtime.corpus.errors import CorpusError
from runtime.corpus.inputs import Row
from runtime.quantization import OutputPrecision, output_dtype, output_width

SHARD_PREFIX = "part-"
SHARD_SUFFIX = ".parquet"
SHARD_KEY = b"runtime.corpus"  # Parquet footer key holding the shard's record (ShardInfo without the file hash)

# Arrow's allocator for the Parquet writer. The pyarrow wheels default to mimalloc, whose arena is backed by transparent
# huge pages: a job's first window (~4 MiB of Arrow buffers) then cost 18 MiB more peak RSS than with malloc (docs,
# corpus jobs, "Memory"). pyarrow reads the variable once, when it is imported, so only a process that has not
# imported it yet can choose: the CLI and the Ray actors set it; a library caller may set it before importing pyarrow.
ARROW_POOL = {"ARROW_DEFAULT_MEMORY_POOL": "system"}


def arrow_pool_env() -> dict[str, str]:
    """The environment a job process wants for Arrow: ``ARROW_POOL``, unless the environment already names a pool."""
    return {k: os.environ.get(k, v) for k, v in ARROW_POOL.items()}


def shard_name(index: int) -> str:
    """``part-NNNNN.parquet``."""
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


def temporary(path: Path) -> Path:
    """A unique hidden name beside ``path``, so the rename that publishes it stays on one file system."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`temporary`'s (left behind by a killed writer)."""
    return name.startswith(".") and ".tmp-" in name


def publish(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable and rename it over ``final``: readers see the old file or the whole new one."""
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON document atomically."""
    tmp = temporary(path)
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Sink:
    """A single output file written through a temporary file: ``write`` windows, then ``commit`` or ``abort``.

    Vectors are of the output type ``precision``: ``width`` values (dimension, or packed bytes) of ``dtype``.
    """

    def __init__(self, path: Path, dimension: int, precision: OutputPrecision = "float32") -> None:
        self.path, self.dimension, self.rows = path, dimension, 0
        self.width, self.dtype = output_width(precision, dimension), output_dtype(precision).newbyteorder("<")
        self.tmp = temporary(path)
        self.file: IO[bytes] = self.tmp.open("wb")

    def write(self, rows: Sequence[Row], vectors: np.ndarray) -> None:
        """Append one window's rows and their vectors (of the sink's type, input order)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the file's content before it is published."""

    def commit(self) -> None:
        """Publish the file under its final name."""
        self.finish()
        self.file.close()
        publish(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the temporary file; an earlier file under the final name stays as it was."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class NpySink(Sink):
    """An (n, width) .npy matrix of the output type (float32, int8, uint8), streamed: the header is rewritten with the
    final row count at the end."""

    def __init__(self, path: Path, dimension: int, precision: OutputPrecision = "float32") -> None:
        super().__init__(path, dimension, precision)
        self._header(0)
        self.header_bytes = self.file.tell()

    def _header(self, rows: int) -> None:
        header = {"descr": self.dtype.str, "fortran_order": False, "shape": (rows, self.width)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, rows: Sequence[Row], vectors: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def finish(self) -> None:
        self.file.seek(0)
        self._header(self.rows)
        if self.file.tell() != self.header_bytes:  # numpy pads headers to 64 bytes: 128 for any (n, 384)
            raise RuntimeError(f"{self.path}: .npy header changed size ({self.header_bytes} -> {self.file.tell()})")


class JsonlSink(Sink):
    """One JSON object per line: the input record's fields (or ``text``) plus ``embedding``.

    Float components are written with 9 significant digits, which read back as the exact float32 values; the compact
    types as integers.
    """

    def write(self, rows: Sequence[Row], vectors: np.ndarray) -> None:
        lines = []
        for row, vector in zip(rows, vectors, strict=True):
            record = dict(row.fields) if row.fields is not None else {"text": row.text}
            record.pop("embedding", None)
            head = json.dumps(record)[:-1]
            values = vector.tolist()
            numbers = ",".join(["%.9g" % x for x in values] if vector.dtype.kind == "f" else map(str, values))  # noqa: UP031
            lines.append(f'{head}{", " if record else ""}"embedding": [{numbers}]}}\n')
        self.file.write("".join(lines).encode("utf-8"))
        self.rows += len(rows)


SINKS = {".npy": NpySink, ".jsonl": JsonlSink}


@dataclass(frozen=True)
class ShardInfo:
    """What a finished shard holds: its input positions [first, end), rows written and rows skipped as bad."""

    shard: int
    first: int
    end: int
    rows: int
    bad_rows: int
    job: str
    file: str = ""
    bytes: int = 0
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in ``_SUCCESS``."""
        return asdict(self)


class ShardWriter:
    """One Parquet shard (``id``, ``embedding`` as fixed_size_list<float32 | int8 | uint8, width>), one row group per
    window; width is the dimension, or the packed bytes of binary/ubinary."""

    def __init__(
        self, folder: Path, info: ShardInfo, id_type: str, dimension: int, precision: OutputPrecision = "float32"
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.info = pa, info
        self.dimension, self.dtype = output_width(precision, dimension), output_dtype(precision)
        value_type = pa.from_numpy_dtype(self.dtype)
        self.final = folder / shard_name(info.shard)
        self.tmp = temporary(self.final)
        self.schema = pa.schema(
            [
                pa.field("id", pa.int64() if id_type == "int64" else pa.string(), nullable=False),
                pa.field("embedding", pa.list_(value_type, self.dimension), nullable=False),
            ]
        )
        # Embeddings barely compress and would only cost time; ids get the usual dictionary/statistics.
        self.writer = pq.ParquetWriter(
            self.tmp, self.schema, compression="none", use_dictionary=["id"], write_statistics=["id"]
        )
        self.rows = 0

    def write(self, rows: Sequence[Row], vectors: np.ndarray) -> None:
        """Append one window."""
        if not rows:
            return
        pa = self.pa
        # Arrays are built from buffers: pa.array() imports pandas when it is installed (+40 MiB RSS, for nothing).
        flat = np.ascontiguousarray(vectors, dtype=self.dtype).reshape(-1)
        value_type = pa.from_numpy_dtype(flat.dtype)
        embeddings = pa.Array.from_buffers(value_type, len(flat), [None, pa.py_buffer(flat)])
        columns = [self._ids(rows), pa.FixedSizeListArray.from_arrays(embeddings, self.dimension)]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))
        self.rows += len(rows)

    def _ids(self, rows: Sequence[Row]) -> Any:
        """The id column (the reader checked each id: an int64, or valid UTF-8)."""
        pa = self.pa
        if self.schema.field("id").type == pa.int64():
            ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
            return pa.Array.from_buffers(pa.int64(), len(rows), [None, pa.py_buffer(ids)])
        encoded = [str(r.id).encode("utf-8") for r in rows]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        data = pa.py_buffer(b"".join(encoded))
        return pa.Array.from_buffers(pa.large_string(), len(rows), [None, pa.py_buffer(offsets), data]).cast(
            pa.string()
        )

    def commit(self, bad_rows: int) -> ShardInfo:
        """Close, record the shard in its footer, and rename it into place; returns its final description."""
        info = ShardInfo(self.info.shard, self.info.first, self.info.end, self.rows, bad_rows, self.info.job)
        self.writer.add_key_value_metadata({SHARD_KEY: json.dumps(info.to_dict())})
        self.writer.close()
        size, digest = self.tmp.stat().st_size, sha256_file(self.tmp)
        publish(self.tmp, self.final)
        return ShardInfo(**{**info.to_dict(), "file": self.final.name, "bytes": size, "sha256": digest})

    def abort(self) -> None:
        """Drop the partial shard."""
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def read_shard_info(path: Path) -> ShardInfo:
    """The record a finished shard carries in its footer (raises CorpusError when it has none or is unreadable)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path).metadata or {}
        record = json.loads(meta[SHARD_KEY])
        info = ShardInfo(**record)
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as err:
        raise CorpusError(f"{path}: not a shard of a corpus job ({type(err).__name__}: {err})") from err
    return ShardInfo(**{**info.to_dict(), "file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)})


def check_sink_suffix(path: Path) -> None:
    """Refuse file outputs this module cannot write."""
    if path.suffix.lower() not in SINKS:
        raise CorpusError(
            f"{path}: unsupported output type {path.suffix!r} (use .npy, .jsonl, or a folder: end the path with /)"
        )


def remove_stale(folder: Path) -> list[str]:
    """Delete temporary files that killed writers left in ``folder``; returns their names."""
    stale = [p for p in folder.iterdir() if is_temporary(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return [p.name for p in stale]
