"""Compact output types: ``encode(precision=...)``, the calibrated ranges in the manifest, and their export."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.artifact import MANIFEST_FILE, read_manifest
from runtime.quantization import (
    OUTPUT_PRECISIONS,
    calibrate,
    check_output_precision,
    output_dtype,
    output_ranges,
    output_width,
    quantize,
    ranges_array,
)

TEXTS = ["A man is playing a guitar.", "A man plays the guitar.", "The stock market fell.", "", "naïve café 東京"]


def _unit(rows: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _with_ranges(src: Path, dst: Path, ranges: np.ndarray) -> Path:
    """A copy of an artifact (graphs present in ``src`` only) whose manifest carries ``ranges``."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.fp32.onnx", "model.fp16.onnx", "__*"))
    manifest = replace(read_manifest(dst), output_ranges=output_ranges(ranges, {"test": True}))
    manifest.write(dst)
    return dst


def _without_ranges(src: Path, dst: Path, skip: tuple[str, ...] = ("model.fp32.onnx", "model.fp16.onnx")) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*skip, "__*"))
    replace(read_manifest(dst), output_ranges=None).write(dst)
    return dst


# ---- the formulas, independent of any model ----


def test_packed_bits_first_dimension_in_the_high_bit() -> None:
    x = np.zeros((2, 16), dtype=np.float32) - 1.0
    x[0, 0] = 0.5  # first bit of the first byte
    x[0, 15] = 0.1  # last bit of the second byte
    x[1, 8:] = 2.0  # the whole second byte
    x[1, 3] = 0.0  # zero is not positive
    assert quantize(x, "ubinary").tolist() == [[0b1000_0000, 0b0000_0001], [0, 0b1111_1111]]
    assert quantize(x, "binary").tolist() == [[0, -127], [-128, 127]]  # the same bytes minus 128


def test_hamming_distance_counts_sign_disagreements() -> None:
    """Catches a layout that scatters bits (the byte order or bit order of one side differing)."""
    a, b = _unit(50, seed=1), _unit(50, seed=2)
    for precision in ("ubinary", "binary"):
        qa, qb = quantize(a, precision).view(np.uint8), quantize(b, precision).view(np.uint8)
        hamming = np.bitwise_count(qa ^ qb).sum(axis=1)
        assert hamming.tolist() == ((a > 0) != (b > 0)).sum(axis=1).tolist()


def test_grid_floors_clips_and_never_wraps() -> None:
    ranges = np.array([[0.0, -1.0, 0.5], [2.55, 1.0, 0.5]], dtype=np.float32)  # steps 0.01, 2/255, zero width
    x = np.array(
        [
            [0.0161, 0.0, 0.5],  # 1.61 and 127.5 steps floor to 1 and 127 (rounding gives 2 and 128)
            [0.0149, 5.0, 0.7],  # 765 steps clips to 255 (a cast would wrap to 253); zero width: floor(0.2)
            [-3.0, -9.0, -2.0],  # below every range: 0, never a wrapped value
            [2.551, 0.999, 1.6],  # just above the top: 255; floor(1.1) on the zero-width dimension (step 1)
        ],
        dtype=np.float32,
    )
    u = quantize(x, "uint8", ranges)
    assert u.dtype == np.uint8 and u.tolist() == [[1, 127, 0], [1, 255, 0], [0, 0, 0], [255, 254, 1]]
    assert quantize(x, "int8", ranges).tolist() == (u.astype(int) - 128).tolist()


def test_symmetric_grid_is_round_to_nearest_with_one_scale() -> None:
    x = _unit(400, seed=3)
    ranges = calibrate(x, "symmetric")
    scale = np.abs(x).max() / 127
    codes = quantize(x, "int8", ranges).astype(int)
    expected = np.clip(np.round(x.astype(np.float64) / scale), -128, 127)
    # a value within float32 rounding of a half-step may land either side
    near_half = np.abs(np.abs(x / scale - np.floor(x / scale)) - 0.5) < 1e-4
    assert np.array_equal(codes[~near_half], expected[~near_half])
    assert np.abs(codes).max() == 127 and quantize(np.zeros(384, np.float32), "int8", ranges).tolist() == [0] * 384


def test_minmax_grid_is_per_dimension_min_and_max() -> None:
    x = _unit(300, seed=4)
    ranges = calibrate(x, "minmax")
    assert np.array_equal(ranges, np.stack([x.min(0), x.max(0)]))
    u = quantize(x, "uint8", ranges)
    # the top lands on 255, or on 254 when float32's (max - min) / step rounds just below 255 (sentence-transformers
    # computes the same)
    assert (u.min(0) == 0).all() and (u.max(0) >= 254).all() and (u.max(0) == 255).mean() > 0.5


@pytest.mark.parametrize("precision", OUTPUT_PRECISIONS)
def test_dtype_and_width(precision: str) -> None:
    x = _unit(3, dim=20)
    out = quantize(x, precision, calibrate(_unit(10, dim=20)))
    assert out.dtype == output_dtype(precision) and out.shape == (3, output_width(precision, 20))
    assert output_width(precision, 20) == (3 if precision.endswith("binary") else 20)  # 20 bits pad to 3 bytes
    one = quantize(x[0], precision, calibrate(_unit(10, dim=20)))
    assert one.shape == out.shape[1:] and np.array_equal(one, out[0])


def test_bad_requests_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"one of \['float32', 'int8', 'uint8', 'binary', 'ubinary'\].*'int4'"):
        check_output_precision("int4")
    with pytest.raises(ValueError, match=r"'fp16' names a graph variant, which runtime.load\(precision=...\)"):
        check_output_precision("fp16")
    with pytest.raises(ValueError, match="needs calibrated ranges"):
        quantize(_unit(2), "int8")
    with pytest.raises(ValueError, match=r"shape \(2, 384\)"):
        quantize(_unit(2), "uint8", np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="low <= high"):
        quantize(_unit(2), "uint8", np.stack([np.ones(384), np.zeros(384)]))
    with pytest.raises(TypeError, match="floating point"):
        quantize(np.zeros((2, 384), np.int8), "binary")


def test_codes_equal_sentence_transformers() -> None:
    """An independent reference: sentence-transformers' own quantize_embeddings with the same float32 ranges."""
    st = pytest.importorskip("sentence_transformers.util.quantization")
    x = _unit(2000, seed=5) * 1.3  # some values beyond the calibrated range, to compare clipping too
    for method in ("symmetric", "minmax"):
        ranges = calibrate(_unit(500, seed=6), method)
        for precision in OUTPUT_PRECISIONS:
            want = st.quantize_embeddings(x, precision, ranges=ranges)
            got = quantize(x, precision, ranges)
            assert got.dtype == want.dtype and np.array_equal(got, want), (method, precision)


# ---- the manifest ----


def test_ranges_round_trip_bit_exact_through_json(default_dir: Path, tmp_path: Path) -> None:
    ranges = calibrate(_unit(100, seed=7), "minmax")
    folder = _with_ranges(default_dir, tmp_path / "a", ranges)
    text = (folder / MANIFEST_FILE).read_text()
    assert text.count("\n") < 300  # the 768 numbers stay on two lines
    assert json.loads(text)["output_ranges"]["calibration"] == {"test": True}
    back = read_manifest(folder).output_ranges
    assert back is not None and ranges_array(back).tobytes() == ranges.tobytes()


def test_manifest_rejects_bad_ranges(default_dir: Path, tmp_path: Path) -> None:
    folder = _with_ranges(default_dir, tmp_path / "a", calibrate(_unit(100), "minmax"))
    data = json.loads((folder / MANIFEST_FILE).read_text())
    cases = {
        "too few": {**data["output_ranges"], "low": data["output_ranges"]["low"][:10]},
        "low > high": {
            **data["output_ranges"],
            "low": data["output_ranges"]["high"],
            "high": data["output_ranges"]["low"],
        },
        "infinite": {**data["output_ranges"], "low": [float("-inf"), *data["output_ranges"]["low"][1:]]},
        "strings": {**data["output_ranges"], "low": ["0"] * 384},
    }
    for name, bad in cases.items():
        (folder / MANIFEST_FILE).write_text(json.dumps({**data, "output_ranges": bad}))
        with pytest.raises(runtime.ArtifactError, match="malformed manifest"):
            read_manifest(folder)
            pytest.fail(f"accepted ranges with {name}")


# ---- encode ----


def test_encode_precision_is_the_reference_applied_to_float32(default_dir: Path, tmp_path: Path) -> None:
    enc = runtime.load(_with_ranges(default_dir, tmp_path / "a", calibrate(_unit(64), "symmetric")), provider="cpu")
    ranges = ranges_array(enc.manifest.output_ranges)
    floats = enc.encode(TEXTS)
    assert enc.output_precisions == OUTPUT_PRECISIONS
    for precision in OUTPUT_PRECISIONS:
        got = enc.encode(TEXTS, precision=precision)
        assert np.array_equal(got, quantize(floats, precision, ranges)), precision
        one = enc.encode(TEXTS[0], precision=precision)
        assert one.ndim == 1 and np.array_equal(one, quantize(enc.encode(TEXTS[0]), precision, ranges))
        empty = enc.encode([], precision=precision)
        assert empty.shape == (0, output_width(precision, 384)) and empty.dtype == output_dtype(precision)
    assert enc.encode(TEXTS, precision="int8").shape == (5, 384)
    assert enc.encode(TEXTS, precision="binary").shape == (5, 48)


def test_artifact_without_ranges_refuses_int8_only(default_dir: Path, tmp_path: Path) -> None:
    enc = runtime.load(_without_ranges(default_dir, tmp_path / "a"), provider="cpu")
    assert enc.output_precisions == ("float32", "binary", "ubinary")
    assert enc.encode(TEXTS, precision="ubinary").shape == (5, 48)
    for precision in ("int8", "uint8"):
        with pytest.raises(
            runtime.ArtifactError, match=r"no calibrated output ranges.*python -m export calibrate-outputs"
        ):
            enc.encode(TEXTS, precision=precision)


def test_encode_precision_is_not_the_graph_precision(encoder: runtime.Encoder) -> None:
    with pytest.raises(ValueError, match=r"graph variant, which runtime.load\(precision=...\) chooses"):
        encoder.encode(TEXTS, precision="fp32")


def test_shipped_artifact_has_ranges_from_its_int8_graph(default_dir: Path) -> None:
    """The committed manifest's grid was measured with the committed int8 graph (rerun calibrate-outputs after a
    re-export, else this fails)."""
    manifest = read_manifest(default_dir)
    assert manifest.output_ranges is not None
    calibration = manifest.output_ranges.calibration
    assert calibration["graph"] == "int8"
    assert calibration["graph_sha256"] == manifest.variants[runtime.Precision.INT8].graph.sha256


# ---- export ----


def test_export_writes_ranges_measured_through_the_runtime(tiny_artifact: Path) -> None:
    from export.calibrate import calibration_sentences

    manifest = read_manifest(tiny_artifact)
    assert manifest.output_ranges is not None and manifest.output_ranges.calibration["graph"] == "int8"
    enc = runtime.load(tiny_artifact, provider="cpu", precision="int8")
    texts = calibration_sentences()
    assert manifest.output_ranges.calibration["sentences"] == len(texts) == len(set(texts)) == 10566
    want = calibrate(enc.encode(texts, batch_size=64), "symmetric")
    assert ranges_array(manifest.output_ranges).tobytes() == want.tobytes()


def test_calibrate_outputs_adds_ranges_to_an_existing_artifact(tiny_artifact: Path, tmp_path: Path) -> None:
    from export.__main__ import main

    folder = _without_ranges(tiny_artifact, tmp_path / "a", skip=())
    before = json.loads((folder / MANIFEST_FILE).read_text())
    main(["calibrate-outputs", "--out", str(folder), "--graph", "fp32", "--method", "minmax", "--sentences", "300"])
    after = json.loads((folder / MANIFEST_FILE).read_text())
    ranges = after.pop("output_ranges")
    assert after == before  # nothing else changed
    assert ranges["calibration"]["graph"] == "fp32" and ranges["calibration"]["sentences"] == 300
    enc = runtime.load(folder, provider="cpu", precision="fp32")
    from export.calibrate import calibration_sentences

    want = calibrate(enc.encode(calibration_sentences(300), batch_size=64), "minmax")
    assert np.array_equal(np.array([ranges["low"], ranges["high"]], dtype=np.float32), want)
