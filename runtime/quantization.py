"""Compact output types of ``Encoder.encode(precision=...)``, as ``sentence_transformers.quantization`` names them.

This is the OUTPUT type of the vectors, not the graph variant ``runtime.load(precision=...)`` picks (int8/fp32/fp16):

- ``float32``: the vectors as the model gives them (4 bytes per dimension).
- ``int8`` / ``uint8``: one byte per dimension on a grid calibrated at export (``Manifest.output_ranges``: every
  machine quantises alike): ``uint8 = floor((x - low) / step)`` with ``step = (high - low) / 255`` per dimension,
  clipped to 0..255 (a value outside the calibrated range takes the nearest end, it never wraps); ``int8 = uint8 -
  128``. Floor, as sentence-transformers does, so the codes equal its ``quantize_embeddings(x, precision,
  ranges=...)`` given the same float32 ranges (the arithmetic runs in float32 in the same order). The shipped grid
  (``calibrate(method="symmetric")``) makes that ``int8 = round(x / s)`` with one scale ``s`` for all dimensions.
- ``ubinary``: the sign bits packed 8 to a byte, first dimension in the highest bit (``np.packbits(x > 0)``), 48 bytes
  for 384 dimensions; ``binary``: the same bytes minus 128, as int8. Compare either with Hamming distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from runtime.artifact import OutputRanges

OutputPrecision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
OUTPUT_PRECISIONS: tuple[OutputPrecision, ...] = ("float32", "int8", "uint8", "binary", "ubinary")
CalibrationMethod = Literal["symmetric", "minmax"]
CALIBRATED: tuple[OutputPrecision, ...] = ("int8", "uint8")
LEVELS = 255  # uint8 codes 0..255: 255 steps between low and high
DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}
GRAPH_PRECISIONS = ("fp32", "fp16")  # what runtime.load(precision=...) takes besides int8, often confused with these


def check_output_precision(value: object) -> OutputPrecision:
    """``value`` if it names an output type, else ValueError naming the allowed ones (and the graph's own knob)."""
    for name in OUTPUT_PRECISIONS:
        if value == name and isinstance(value, str):
            return name
    hint = ""
    if value in GRAPH_PRECISIONS:
        hint = (
            f"; {value!r} names a graph variant, which runtime.load(precision=...) chooses "
            "(encode's precision is the type of the returned vectors)"
        )
    raise ValueError(f"output precision must be one of {list(OUTPUT_PRECISIONS)}, got {value!r}{hint}")


def output_dtype(precision: OutputPrecision) -> np.dtype[np.generic]:
    """The numpy dtype of vectors of this output type."""
    return np.dtype(DTYPES[precision])


def output_width(precision: OutputPrecision, dimension: int) -> int:
    """Values per vector: ``dimension``, or ``ceil(dimension / 8)`` bytes of packed bits for binary/ubinary."""
    return (dimension + 7) // 8 if precision in ("binary", "ubinary") else dimension


def calibrate(embeddings: np.ndarray, method: CalibrationMethod = "symmetric", percentile: float = 0.0) -> np.ndarray:
    """Ranges ``(2, dim)`` float32 for int8/uint8 from calibration ``embeddings`` (n, dim).

    ``symmetric``: one scale for every dimension, ``s = M / 127`` with ``M`` the largest ``|x|``, written as the
    ranges ``[-128.5 s, 126.5 s]``, on which the floor above makes ``int8 = round(x / s)`` (zero is code 0, +-M is
    +-127): int8 dot products are then proportional to float dot products. ``minmax``: each dimension's own min and
    max (sentence-transformers' ``calibration_embeddings``). ``percentile`` > 0 takes that percentile instead of the
    extremes (``100 - percentile`` for max and ``M``).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"calibration needs a finite (n >= 2, dim) matrix, got shape {x.shape}")
    if not 0.0 <= percentile < 50.0:
        raise ValueError(f"percentile must be in [0, 50), got {percentile}")
    if method == "symmetric":
        a = np.abs(x.astype(np.float64))
        m = float(a.max() if percentile == 0.0 else np.percentile(a, 100.0 - percentile))
        s = max(m, 1e-30) / 127.0
        return np.stack([np.full(x.shape[1], -128.5 * s), np.full(x.shape[1], 126.5 * s)]).astype(np.float32)
    if method != "minmax":
        raise ValueError(f"method must be 'symmetric' or 'minmax', got {method!r}")
    if percentile == 0.0:
        return np.stack([x.min(axis=0), x.max(axis=0)])
    low, high = np.percentile(x.astype(np.float64), [percentile, 100.0 - percentile], axis=0)
    return np.stack([low, high]).astype(np.float32)


def check_ranges(ranges: np.ndarray | Sequence[Sequence[float]], dimension: int) -> np.ndarray:
    """``ranges`` as a float32 ``(2, dimension)`` array of finite [low, high] with low <= high, else ValueError."""
    r = np.asarray(ranges, dtype=np.float32)
    if r.shape != (2, dimension):
        raise ValueError(f"ranges must have shape (2, {dimension}) (low row, high row), got {r.shape}")
    if not np.isfinite(r).all() or (r[0] > r[1]).any():
        raise ValueError("ranges must be finite with low <= high in every dimension")
    return r


def quantize(embeddings: np.ndarray, precision: OutputPrecision, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float embeddings ``(n, dim)`` or ``(dim,)`` -> the output type (same leading shape; see the module doc).

    ``ranges`` (``(2, dim)``: low row, high row) is required for int8/uint8 and ignored otherwise.
    """
    precision = check_output_precision(precision)
    x = np.asarray(embeddings)
    if x.dtype.kind != "f":
        raise TypeError(f"embeddings to quantise must be floating point, got {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"embeddings must be (dim,) or (n, dim), got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if precision == "float32":
        return x
    if precision in ("binary", "ubinary"):
        packed = np.packbits(x > 0, axis=-1)
        return packed if precision == "ubinary" else (packed ^ np.uint8(0x80)).view(np.int8)  # x - 128, no wrap
    if ranges is None:
        raise ValueError(f"precision {precision!r} needs calibrated ranges (2, dim)")
    r = check_ranges(ranges, x.shape[-1])
    low = r[0]
    step = (r[1] - r[0]) / np.float32(LEVELS)
    step = np.where(step == 0, np.float32(1), step)
    codes: np.ndarray = np.clip(np.floor((x - low) / step), 0, LEVELS).astype(np.uint8)
    return codes if precision == "uint8" else (codes ^ np.uint8(0x80)).view(np.int8)


def output_ranges(ranges: np.ndarray, calibration: dict[str, Any]) -> OutputRanges:
    """The manifest entry for float32 ``ranges`` (2, dim) and the record of how they were measured."""
    r = check_ranges(ranges, np.asarray(ranges).shape[-1])
    return OutputRanges(tuple(map(float, r[0])), tuple(map(float, r[1])), dict(calibration))


def ranges_array(entry: OutputRanges) -> np.ndarray:
    """A manifest entry as the ``(2, dim)`` float32 array ``quantize`` (and sentence-transformers) take."""
    return np.array([entry.low, entry.high], dtype=np.float32)
