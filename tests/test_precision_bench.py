"""studies.precision: its searches score what they claim (exact int8 dot products, Hamming distances), and a small
run writes its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the bench extra")

from runtime.artifact import read_manifest
from runtime.quantization import calibrate, quantize
from studies import precision as bench


def _unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, 384)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_scores_are_exact() -> None:
    corpus, queries = _unit(40_000, 0), _unit(30, 1)  # more than one chunk of the corpus
    ranges = calibrate(corpus, "symmetric")
    c8, q8 = quantize(corpus, "int8", ranges), quantize(queries, "int8", ranges)
    got = bench.Search("int8", c8, 1).scores(q8)
    assert np.array_equal(got, q8.astype(np.int64) @ c8.astype(np.int64).T)  # the +128 storage is corrected
    u8c, u8q = quantize(corpus, "uint8", ranges), quantize(queries, "uint8", ranges)
    assert np.array_equal(bench.Search("uint8", u8c, 1).scores(u8q), u8q.astype(np.int64) @ u8c.astype(np.int64).T)
    for precision in ("binary", "ubinary"):
        cb, qb = quantize(corpus[:500], precision), quantize(queries, precision)
        want = ((queries[:, None, :] > 0) != (corpus[None, :500, :] > 0)).sum(-1)
        assert np.array_equal(bench.Search(precision, cb, 2).scores(qb), want)


def test_top_k_is_best_first() -> None:
    scores = np.array([[5, 1, 9, 7, 3], [0, 8, 2, 6, 4]])
    assert bench.top_k(scores, 3).tolist() == [[2, 3, 0], [1, 3, 4]]
    assert bench.top_k(scores, 2, largest=False).tolist() == [[1, 4], [0, 2]]


def test_hamming_similarity_of_a_vector_with_itself_is_its_bit_count() -> None:
    x = _unit(6, 2)
    for precision in ("binary", "ubinary"):
        codes = quantize(x, precision)
        assert bench.row_similarity(precision, codes, codes).tolist() == [384] * 6  # Hamming similarity of itself


def test_small_run_writes_its_report(tiny_artifact: Path, tmp_path: Path) -> None:
    stem = tmp_path / "p"
    args = ["--model", str(tiny_artifact), "--corpus", "300", "--queries", "20", "--repeats", "1", "--threads", "1"]
    assert bench.main([*args, "--cache", str(tmp_path / "cache"), "--out", str(stem)]) == 0
    doc = json.loads(stem.with_suffix(".json").read_text())
    rows = {r["precision"]: r for r in doc["results"]["rows"]}
    assert list(rows)[:5] == ["float32", "int8", "uint8", "binary", "ubinary"]
    dim = read_manifest(tiny_artifact).dimension
    assert rows["float32"]["recall_at_10"] == 1.0 and rows["float32"]["bytes_per_vector"] == 4 * dim
    assert rows["int8"]["bytes_per_vector"] == rows["uint8"]["bytes_per_vector"] == dim
    assert rows["binary"]["bytes_per_vector"] == rows["ubinary"]["bytes_per_vector"] == (dim + 7) // 8
    assert rows["binary"]["dev_spearman"] == rows["ubinary"]["dev_spearman"]  # the same bits
    assert doc["results"]["uint8_centred_dev_spearman"] == rows["int8"]["dev_spearman"]
    assert "| ubinary + int8 rescore |" in stem.with_suffix(".md").read_text()
