"""Corpus jobs of the compact output types: Parquet fixed_size_list<int8 | uint8, width>, .npy dtypes, .jsonl
integers, resume and the checker."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.data import dev_sentences
from runtime.artifact import read_manifest
from runtime.corpus import CorpusError, check, encode_files
from runtime.corpus.check import CheckReport, _compare_codes
from runtime.quantization import output_ranges, ranges_array

TEXTS = [*dev_sentences()[:150], "", "é\u00e8 ü"]
WIDTH = {"int8": 384, "uint8": 384, "binary": 48, "ubinary": 48}
ARROW = {"int8": "int8", "uint8": "uint8", "binary": "int8", "ubinary": "uint8"}


def _txt(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.mark.parametrize("precision", list(WIDTH))
def test_shards_hold_the_library_codes_in_a_fixed_size_list(
    tmp_path: Path, encoder: runtime.Encoder, precision: str
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "emb"
    encode_files(_txt(tmp_path / "in.txt", TEXTS), out, encoder=encoder, shard_rows=100, output_precision=precision)
    table = pq.read_table(sorted(out.glob("part-*.parquet")))
    kind = table.schema.field("embedding").type
    assert kind.list_size == WIDTH[precision] and str(kind.value_type) == ARROW[precision]  # fixed_size_list<...>
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert got.shape == (len(TEXTS), WIDTH[precision])
    assert np.array_equal(got, encoder.encode(TEXTS, precision=precision))  # one window: the same runs, the same bits
    report = check(out, tmp_path / "in.txt", encoder=encoder, sample=50)
    assert report.ok and report.sampled == 50 and report.max_abs_diff == 0, report.problems


@pytest.mark.parametrize(("precision", "dtype"), [("uint8", "|u1"), ("binary", "|i1"), ("float32", "<f4")])
def test_npy_and_jsonl_get_the_type(tmp_path: Path, encoder: runtime.Encoder, precision: str, dtype: str) -> None:
    source = _txt(tmp_path / "in.txt", TEXTS[:20])
    encode_files(source, tmp_path / "out.npy", encoder=encoder, output_precision=precision)
    matrix = np.load(tmp_path / "out.npy")
    want = encoder.encode(TEXTS[:20], precision=precision)
    assert matrix.dtype.str == dtype and np.array_equal(matrix, want)
    encode_files(source, tmp_path / "out.jsonl", encoder=encoder, output_precision=precision)
    rows = [json.loads(line)["embedding"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    if precision != "float32":
        assert all(isinstance(v, int) for row in rows for v in row)
    assert np.array_equal(np.array(rows, dtype=want.dtype), want)


def test_resume_keeps_the_output_precision_and_refuses_another(tmp_path: Path, encoder: runtime.Encoder) -> None:
    pytest.importorskip("pyarrow.parquet")
    source = _txt(tmp_path / "in.txt", ["one", "two", "three"])
    out = tmp_path / "emb"
    encode_files(source, out, encoder=encoder, shard_rows=2, output_precision="int8")
    first = (out / "part-00001.parquet").read_bytes()
    (out / "_SUCCESS").unlink()
    (out / "part-00001.parquet").unlink()
    with pytest.raises(CorpusError, match="option output_precision was 'int8' when the job started, 'binary' now"):
        encode_files(source, out, encoder=encoder, resume=True, output_precision="binary")
    result = encode_files(source, out, encoder=encoder, resume=True)  # not given: the job's int8
    assert result.resumed_shards == 1 and (out / "part-00001.parquet").read_bytes() == first


def test_resume_refuses_a_changed_grid(tmp_path: Path, encoder: runtime.Encoder, damaged: Path) -> None:
    pytest.importorskip("pyarrow.parquet")
    source = _txt(tmp_path / "in.txt", ["one", "two", "three"])
    out = tmp_path / "emb"
    encode_files(source, out, model=damaged, provider="cpu", shard_rows=2, output_precision="uint8")
    (out / "_SUCCESS").unlink()
    (out / "part-00001.parquet").unlink()
    manifest = read_manifest(damaged)
    assert manifest.output_ranges is not None
    wider = ranges_array(manifest.output_ranges) * np.float32(1.5)
    replace(manifest, output_ranges=output_ranges(wider, {"test": True})).write(damaged)
    with pytest.raises(CorpusError, match="the model changed: output_ranges_sha256"):
        encode_files(source, out, model=damaged, provider="cpu", resume=True)


def test_a_float32_job_ignores_the_grid(tmp_path: Path, damaged: Path) -> None:
    pytest.importorskip("pyarrow.parquet")
    source = _txt(tmp_path / "in.txt", ["one", "two", "three"])
    out = tmp_path / "emb"
    encode_files(source, out, model=damaged, provider="cpu", shard_rows=2)
    (out / "_SUCCESS").unlink()
    (out / "part-00001.parquet").unlink()
    replace(read_manifest(damaged), output_ranges=None).write(damaged)  # recalibrated or removed: float32 unaffected
    assert encode_files(source, out, model=damaged, provider="cpu", resume=True).resumed_shards == 1


def test_no_grid_refuses_int8_before_writing(tmp_path: Path, damaged: Path) -> None:
    replace(read_manifest(damaged), output_ranges=None).write(damaged)
    source = _txt(tmp_path / "in.txt", ["one"])
    for out in (tmp_path / "a.npy", tmp_path / "folder"):
        with pytest.raises(CorpusError, match=r"no calibrated output ranges.*python -m export calibrate-outputs"):
            encode_files(source, out, model=damaged, provider="cpu", output_precision="int8")
    assert not (tmp_path / "a.npy").exists() and not list((tmp_path / "folder").glob("*"))
    encode_files(source, tmp_path / "b.npy", model=damaged, provider="cpu", output_precision="ubinary")
    assert np.load(tmp_path / "b.npy").shape == (1, 48)
    with pytest.raises(ValueError, match="output precision must be one of"):
        encode_files(source, tmp_path / "c.npy", model=damaged, provider="cpu", output_precision="fp16")


def test_checker_catches_codes_the_library_would_not_give(encoder: runtime.Encoder) -> None:
    texts = TEXTS[:20]
    for precision in WIDTH:
        codes = encoder.encode(texts, precision=precision)
        report = CheckReport("x")
        _compare_codes(texts, codes, encoder, 1e-5, precision, report)
        assert report.ok, report.problems
        bad = codes.copy()
        bad.view(np.uint8)[3, 5] ^= 0b0000_0100  # one value off by 4 (int8/uint8) or one bit flipped (packed)
        report = CheckReport("x")
        _compare_codes(texts, bad, encoder, 1e-5, precision, report)
        assert report.problems and "differ from the library's codes" in report.problems[0], precision


def test_cli_output_precision(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow.parquet")
    from runtime.__main__ import main

    source = _txt(tmp_path / "in.txt", ["one", "two"])
    main(["encode", str(source), "-o", str(tmp_path / "out.npy"), "--output-precision", "ubinary", "-q"])
    assert np.load(tmp_path / "out.npy").dtype == np.uint8
    with pytest.raises(SystemExit):
        main(["encode", str(source), "-o", str(tmp_path / "x.npy"), "--output-precision", "fp32", "-q"])
