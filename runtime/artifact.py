"""The artifact contract: folder layout, manifest schema and integrity checks.

An artifact is a folder holding ``manifest.json``, ``tokenizer.json`` and one graph per precision
(``model.<precision>.onnx``). Export writes it through :class:`Manifest`; the runtime reads it back the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from runtime.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MODEL = "minilm-l6-stsb"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
DIMENSION = 384
MAX_SEQ_LENGTH = 256


class Precision(str, Enum):
    """Numeric precision of a graph variant."""

    FP32 = "fp32"
    INT8 = "int8"
    FP16 = "fp16"

    @property
    def file_name(self) -> str:
        """The graph's file name inside an artifact folder."""
        return f"model.{self.value}.onnx"


@dataclass(frozen=True)
class FileEntry:
    """A file of the artifact with its size and sha256, so damage is detected on load."""

    file: str
    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or self.bytes < 0:
            raise ValueError(f"invalid file entry for {self.file!r}: sha256 {self.sha256!r}, bytes {self.bytes}")

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        """Describe an existing file."""
        return cls(file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size)


@dataclass(frozen=True)
class Variant:
    """One graph of the artifact: its file, how it was made and the metrics it reached at export."""

    precision: Precision
    graph: FileEntry
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputRanges:
    """Per-dimension [low, high] of calibration embeddings: the grid of ``encode(precision="int8" | "uint8")``.

    Values are float32 numbers (JSON holds their shortest decimals, read back as the same float32 numbers);
    ``calibration`` records how they were measured (graph variant, sentences, method).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.low or len(self.low) != len(self.high):
            raise ValueError(f"output ranges need equal, non-empty low/high rows, got {len(self.low)}/{len(self.high)}")
        for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"output ranges: dimension {i} has low {lo!r}, high {hi!r} (need finite low <= high)")
            if _float32(lo) != lo or _float32(hi) != hi:
                raise ValueError(f"output ranges: dimension {i} holds a value that is not a float32 number")


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 number."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _shortest32(value: float) -> float:
    """The shortest decimal that reads back (through float64, as JSON readers do) as the float32 ``value``."""
    for digits in range(1, 10):
        short = float(f"{value:.{digits}g}")
        if _float32(short) == value:
            return short
    return value


@dataclass(frozen=True)
class Manifest:
    """Self-description of an artifact; ``provenance`` holds the record of how it was made (free-form)."""

    name: str
    dimension: int
    max_seq_length: int
    tokenizer: FileEntry
    variants: dict[Precision, Variant]
    pooling: str = "mean"
    normalized: bool = True
    inputs: tuple[str, ...] = INPUT_NAMES
    output: str = OUTPUT_NAME
    format_version: int = FORMAT_VERSION
    provenance: dict[str, Any] = field(default_factory=dict)
    output_ranges: OutputRanges | None = (
        None  # absent: int8/uint8 outputs unavailable (python -m export calibrate-outputs)
    )

    def __post_init__(self) -> None:
        if self.dimension < 1 or self.max_seq_length < 2:
            raise ValueError(f"invalid dimension {self.dimension} or max_seq_length {self.max_seq_length}")
        if not self.variants:
            raise ValueError("a manifest needs at least one graph variant")
        if self.output_ranges is not None and len(self.output_ranges.low) != self.dimension:
            raise ValueError(f"output ranges cover {len(self.output_ranges.low)} dimensions, not {self.dimension}")

    def to_json(self) -> str:
        """Serialise; enums become their values, lists of numbers stay on one line."""
        data = asdict(self)
        data["variants"] = {p.value: {**asdict(v), "precision": p.value} for p, v in self.variants.items()}
        data["inputs"] = list(self.inputs)
        if self.output_ranges is None:
            del data["output_ranges"]
        else:  # JSON holds the shortest decimals; reading rounds them back to the same float32 numbers
            for row in ("low", "high"):
                data["output_ranges"][row] = [_shortest32(v) for v in getattr(self.output_ranges, row)]
        text = json.dumps(data, indent=2, sort_keys=False)
        return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"

    def write(self, folder: Path) -> Path:
        """Write ``manifest.json`` into ``folder``."""
        path = folder / MANIFEST_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build from parsed JSON; raises KeyError/TypeError/ValueError on a malformed document."""
        variants = {}
        for key, raw in data["variants"].items():
            precision = Precision(key)
            variants[precision] = Variant(
                precision=precision,
                graph=FileEntry(**raw["graph"]),
                metrics=dict(raw.get("metrics", {})),
                settings=dict(raw.get("settings", {})),
            )
        return cls(
            name=str(data["name"]),
            dimension=int(data["dimension"]),
            max_seq_length=int(data["max_seq_length"]),
            tokenizer=FileEntry(**data["tokenizer"]),
            variants=variants,
            pooling=str(data["pooling"]),
            normalized=bool(data["normalized"]),
            inputs=tuple(data["inputs"]),
            output=str(data["output"]),
            format_version=int(data["format_version"]),
            provenance=dict(data.get("provenance", {})),
            output_ranges=_output_ranges(data.get("output_ranges")),
        )


def _output_ranges(raw: Any) -> OutputRanges | None:
    if raw is None:
        return None
    low, high = raw["low"], raw["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*low, *high]):
        raise TypeError("output_ranges low/high must be lists of numbers")
    return OutputRanges(
        tuple(_float32(float(v)) for v in low),
        tuple(_float32(float(v)) for v in high),
        dict(raw.get("calibration", {})),
    )


# A JSON array of numbers as json.dumps(indent=2) lays it out, one per line (a JSON string never holds a newline).
_NUMBER_LIST = re.compile(r"\[\n\s*(-?\d[\d.eE+-]*(?:,\n\s*-?\d[\d.eE+-]*)*)\n\s*\]")


def default_artifact_dir() -> Path:
    """The shipped default model: inside the installed package, or ``artifacts/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "artifacts" / DEFAULT_MODEL, here.parent / "artifacts" / DEFAULT_MODEL):
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    raise ArtifactError(
        f"default model {DEFAULT_MODEL!r} not found under {here / 'artifacts'} or {here.parent / 'artifacts'}; "
        "reinstall the package or pass the artifact folder to runtime.load()"
    )


def read_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/manifest.json``."""
    path = folder / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ArtifactError(f"{path}: manifest missing (is {folder} a model artifact folder?)") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: unreadable manifest: {err}") from err
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: manifest must be a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version!r} is not supported by this runtime (it reads version {FORMAT_VERSION}); "
            "upgrade the runtime or re-export the artifact"
        )
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: malformed manifest: {type(err).__name__}: {err}") from err
    if manifest.inputs != INPUT_NAMES or manifest.output != OUTPUT_NAME:
        raise ArtifactError(
            f"{path}: graph contract {list(manifest.inputs)} -> {manifest.output!r} differs from "
            f"{list(INPUT_NAMES)} -> {OUTPUT_NAME!r}"
        )
    return manifest


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed in 1 MiB blocks (no copy of the file is kept)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path, entry: FileEntry) -> Path:
    """Check an artifact file's size and sha256 against the manifest (streamed: no copy is kept); return its path."""
    path = folder / entry.file
    try:
        size = path.stat().st_size
        if size != entry.bytes:
            raise ArtifactError(f"{path}: {size} bytes, manifest says {entry.bytes} (truncated or replaced?)")
        digest = sha256_file(path)
    except FileNotFoundError as err:
        raise ArtifactError(f"{path}: file missing (listed in {MANIFEST_FILE})") from err
    except OSError as err:
        raise ArtifactError(f"{path}: unreadable: {err}") from err
    if digest != entry.sha256:
        raise ArtifactError(f"{path}: sha256 mismatch (manifest says {entry.sha256}, file has {digest})")
    return path
