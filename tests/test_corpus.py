"""Corpus jobs: streamed windows, bad rows, atomic outputs, Parquet shards, kill -9 and resume, the checker."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.data import dev_sentences
from runtime.artifact import read_manifest
from runtime.corpus import CorpusError, check, encode_files, state

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-6  # windows batch texts differently from one encode() call: float rounding only (measured 3e-8)
EDGE = ["", "   ", "é\u00e8 ü", "x" * 3000, "tab\tinside", "A man is playing a guitar."]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return dev_sentences()[:600] + EDGE


def _txt(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def _read_folder(folder: Path) -> tuple[list[object], np.ndarray]:
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(sorted(folder.glob("part-*.parquet")))
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    return table.column("id").to_pylist(), vectors


# ---- file outputs (.npy / .jsonl): no extra dependency ----


def test_small_windows_stream_and_match_one_encode_call(
    tmp_path: Path, texts: list[str], encoder: runtime.Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = runtime.Encoder.encode

    def spy(self: runtime.Encoder, sentences: list[str], **kw: object) -> np.ndarray:
        calls.append(len(sentences))
        return real(self, sentences, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime.Encoder, "encode", spy)
    out = tmp_path / "out.npy"
    result = encode_files(_txt(tmp_path / "in.txt", texts), out, encoder=encoder, window=64)
    monkeypatch.undo()
    assert max(calls) == 64 and sum(calls) == len(texts)  # never more than one window in memory
    assert result.rows == result.records == len(texts)
    np.testing.assert_allclose(np.load(out), encoder.encode(texts), atol=ATOL)


def test_jsonl_output_keeps_fields_and_exact_float32(
    tmp_path: Path, texts: list[str], encoder: runtime.Encoder
) -> None:
    source = tmp_path / "docs.jsonl"
    records = [{"doc": f"d{i}", "text": t, "meta": {"n": i}} for i, t in enumerate(texts[:50])]
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    encode_files(source, tmp_path / "out.jsonl", encoder=encoder)
    encode_files(source, tmp_path / "out.npy", encoder=encoder)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [{k: v for k, v in r.items() if k != "embedding"} for r in rows] == records
    # 9 significant digits read back as the very float32 values the .npy run wrote
    assert np.array_equal(np.array([r["embedding"] for r in rows], dtype=np.float32), np.load(tmp_path / "out.npy"))


def test_empty_input_gives_an_empty_matrix(tmp_path: Path, encoder: runtime.Encoder) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    encode_files(tmp_path / "empty.txt", tmp_path / "out.npy", encoder=encoder)
    loaded = np.load(tmp_path / "out.npy")
    assert loaded.shape == (0, 384) and loaded.dtype == np.float32


def test_lines_split_on_newline_only_and_crlf_is_stripped(tmp_path: Path, encoder: runtime.Encoder) -> None:
    (tmp_path / "in.txt").write_bytes(b"a\r\nb\rc\n\nlast")
    encode_files(tmp_path / "in.txt", tmp_path / "out.npy", encoder=encoder)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encoder.encode(["a", "b\rc", "", "last"]), atol=ATOL)


def test_refuses_to_overwrite_its_input(tmp_path: Path, encoder: runtime.Encoder) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "a", "keep": 1}\n', encoding="utf-8")
    before = source.read_bytes()
    with pytest.raises(CorpusError, match="would overwrite"):
        encode_files(source, source, encoder=encoder)
    assert source.read_bytes() == before


def test_a_failed_job_leaves_the_previous_output_and_no_temporary_file(
    tmp_path: Path, encoder: runtime.Encoder
) -> None:
    out = tmp_path / "out.npy"
    encode_files(_txt(tmp_path / "good.txt", ["one", "two"]), out, encoder=encoder)
    before = out.read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n' * 10 + '{"text": null}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:11: field 'text' is null"):
        encode_files(bad, out, encoder=encoder, window=4)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.txt", "out.npy"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("short.csv", "id,text\n1,ok\n2\n", r"short\.csv:3: row has 1 fields, no value for column 'text'"),
        ("quoted.csv", 'id,text\n1,"two\nlines"\n2,"x""y"\n3,\n', None),
        ("bytes.txt", b"ok\n\xff\xfe bad\n", r"bytes\.txt:2: invalid UTF-8 at byte 0"),
        ("bytes.csv", b"text\nok\n\xc3(\n", r"bytes\.csv:3: field 'text' is not valid UTF-8"),
        ("number.jsonl", '{"text": "ok"}\n{"text": 3}\n', r"number\.jsonl:2: field 'text' is int, expected a string"),
        ("missing.jsonl", '{"text": "ok"}\n\n{"body": "x"}\n', r"missing\.jsonl:3: no field 'text'"),
        ("broken.jsonl", '{"text": "ok"}\n{"text": \n', r"broken\.jsonl:2: not valid JSON"),
        ("list.jsonl", '["text"]\n', r"list\.jsonl:1: expected a JSON object, got list"),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, encoder: runtime.Encoder, name: str, content: str | bytes, message: str | None
) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if message is None:  # quoted newlines and quotes are CSV, not bad rows
        encode_files(path, tmp_path / "out.npy", encoder=encoder)
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encoder.encode(["two\nlines", 'x"y', ""]), atol=ATOL)
        return
    with pytest.raises(CorpusError, match=message):
        encode_files(path, tmp_path / "out.npy", encoder=encoder)


def test_skip_bad_rows_counts_logs_and_keeps_the_good_ones(
    tmp_path: Path, encoder: runtime.Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a"}\n{"text": 1}\n{"x": 2}\n\n{"text": "b"}\n', encoding="utf-8")
    result = encode_files(path, tmp_path / "out.jsonl", encoder=encoder, skip_bad_rows=True)
    assert (result.records, result.rows, result.bad_rows) == (5, 2, 2)
    assert "mixed.jsonl:2" in caplog.text and "mixed.jsonl:3" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["a", "b"]
    with pytest.raises(CorpusError, match="no ids"):
        encode_files(path, tmp_path / "out.npy", encoder=encoder, skip_bad_rows=True)


def test_encoder_progress_bar_is_tqdm_with_a_rate(encoder: runtime.Encoder, capsys: pytest.CaptureFixture[str]) -> None:
    encoder.encode(["a", "b", "c"], show_progress_bar=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "texts/s" in err
    encoder.encode(["a", "b", "c"])
    assert capsys.readouterr().err == ""


def test_job_progress_bar_shows_total_and_rate_only_when_asked(
    tmp_path: Path, encoder: runtime.Encoder, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _txt(tmp_path / "in.txt", ["a", "b", "c", "d"])
    encode_files(source, tmp_path / "a.npy", encoder=encoder, progress=True, window=2)
    err = capsys.readouterr().err
    assert "4/4" in err and "texts/s" in err
    encode_files(source, tmp_path / "b.npy", encoder=encoder)  # stderr is not a terminal here: quiet
    assert capsys.readouterr().err == ""


# ---- folders of Parquet shards ----


@pytest.fixture()
def pq() -> object:
    return pytest.importorskip("pyarrow.parquet")


def test_folder_job_writes_shards_ids_and_success_manifest(
    pq: object, tmp_path: Path, texts: list[str], encoder: runtime.Encoder
) -> None:
    source = _txt(tmp_path / "in.txt", texts)
    out = tmp_path / "emb"
    result = encode_files(source, out, encoder=encoder, shard_rows=250, window=100)
    assert sorted(os.listdir(out)) == [
        "_SUCCESS",
        "_job.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    ids, vectors = _read_folder(out)
    assert ids == list(range(len(texts)))
    np.testing.assert_allclose(vectors, encoder.encode(texts), atol=ATOL)
    summary = json.loads((out / "_SUCCESS").read_text())
    manifest = read_manifest(encoder.folder)
    assert summary["model"]["graph_sha256"] == manifest.variants[encoder.precision].graph.sha256
    assert summary["rows"] == len(texts) == result.rows and summary["bad_rows"] == 0
    assert summary["input"]["files"][0]["sha256"] == runtime.artifact.sha256_file(source)
    assert [s["file"] for s in summary["shards"]] == [f"part-0000{i}.parquet" for i in range(3)]
    for shard in summary["shards"]:
        assert shard["sha256"] == runtime.artifact.sha256_file(out / shard["file"])
    schema = pq.read_schema(out / "part-00000.parquet")  # type: ignore[attr-defined]
    assert str(schema.field("embedding").type) == "fixed_size_list<element: float>[384]"


def test_many_files_number_positions_across_files_and_shards_span_them(
    pq: object, tmp_path: Path, encoder: runtime.Encoder
) -> None:
    (tmp_path / "in").mkdir()
    _txt(tmp_path / "in" / "a.txt", ["a0", "a1", "a2"])
    (tmp_path / "in" / "b.jsonl").write_text('{"text": "b0"}\n\n{"text": "b2"}\n', encoding="utf-8")
    with (tmp_path / "in" / "c.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text"], ["c0 with\nnewline"], ["c1"], ["c2"], ["c3"]])
    (tmp_path / "in" / "_ignored.txt").write_text("not input\n")
    out = tmp_path / "emb"
    encode_files(tmp_path / "in", out, encoder=encoder, shard_rows=4, window=3)
    ids, vectors = _read_folder(out)
    texts = ["a0", "a1", "a2", "b0", "b2", "c0 with\nnewline", "c1", "c2", "c3"]
    assert ids == [0, 1, 2, 3, 5, 6, 7, 8, 9]  # the blank .jsonl line holds position 4
    np.testing.assert_allclose(vectors, encoder.encode(texts), atol=ATOL)
    assert check(out, [tmp_path / "in"], sample=100, encoder=encoder).ok


def test_id_column_and_parquet_input(pq: object, tmp_path: Path, encoder: runtime.Encoder) -> None:
    import pyarrow as pa

    table = pa.table({"key": [10, 11, 12, 13], "body": ["x", None, "z", "w"]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=2)  # type: ignore[attr-defined]
    with pytest.raises(CorpusError, match=r"in\.parquet:row 2: column 'body' is null"):
        encode_files(tmp_path / "in.parquet", tmp_path / "o1", encoder=encoder, column="body")
    out = tmp_path / "o2"
    encode_files(
        tmp_path / "in.parquet",
        out,
        encoder=encoder,
        column="body",
        id_column="key",
        skip_bad_rows=True,
        shard_rows=3,
        window=2,
    )
    ids, vectors = _read_folder(out)
    assert ids == [10, 12, 13]
    np.testing.assert_allclose(vectors, encoder.encode(["x", "z", "w"]), atol=ATOL)


def test_string_ids_from_jsonl_refuse_a_mixed_type(pq: object, tmp_path: Path, encoder: runtime.Encoder) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": 7, "text": "y"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"in\.jsonl:2: id field 'id' is int, expected a string"):
        encode_files(path, tmp_path / "out", encoder=encoder, id_column="id")


def _killed_then_resumed(tmp_path: Path, source: Path, options: list[str], kill_after: int) -> tuple[Path, set[str]]:
    """Run the CLI, kill -9 it once ``kill_after`` shards exist, then resume; returns the folder and the shards
    that existed at the kill."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "runtime", "encode", str(source), "-o", str(out), "--provider", "cpu", *options]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < kill_after:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no shard written in 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat() for p in out.glob("part-*.parquet")}
    assert not (out / "_SUCCESS").exists() and len(before) < 6
    with pytest.raises(CorpusError, match="pass --resume"):
        encode_files(source, out, provider="cpu")
    result = encode_files(source, out, provider="cpu", resume=True)
    assert result.resumed_shards == len(before)
    for name, stat in before.items():  # finished shards were not rewritten
        assert (out / name).stat().st_mtime_ns == stat.st_mtime_ns and (out / name).stat().st_ino == stat.st_ino
    return out, set(before)


def test_kill_9_then_resume_is_byte_identical_to_an_uninterrupted_run(
    pq: object, tmp_path: Path, encoder: runtime.Encoder
) -> None:
    texts = dev_sentences()[:1500]
    source = _txt(tmp_path / "in.txt", texts)
    options = ["--shard-rows", "250", "--window", "125"]
    whole = tmp_path / "whole"
    encode_files(source, whole, provider="cpu", shard_rows=250, window=125)
    out, _ = _killed_then_resumed(tmp_path, source, options, kill_after=2)
    assert _shards(out) == _shards(whole)
    a, b = (json.loads((f / "_SUCCESS").read_text()) for f in (out, whole))
    assert {k: v for k, v in a.items() if k != "completed"} == {k: v for k, v in b.items() if k != "completed"}
    assert check(out, source, sample=50).ok  # the library under the rule the job recorded (auto: per CPU class)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_resume_refuses_changed_input_model_or_options(
    pq: object, tmp_path: Path, encoder: runtime.Encoder, damaged: Path
) -> None:
    source = _txt(tmp_path / "in.txt", ["one", "two", "three"])
    out = tmp_path / "emb"
    encode_files(source, out, encoder=encoder, shard_rows=2)
    (out / "_SUCCESS").unlink()
    (out / "part-00001.parquet").unlink()
    with pytest.raises(CorpusError, match="option shard_rows was 2 when the job started, 3 now"):
        encode_files(source, out, encoder=encoder, resume=True, shard_rows=3)
    # the same tokenizer, re-serialised: a different file, so a different model as far as the job knows
    tokenizer = damaged / "tokenizer.json"
    tokenizer.write_text(json.dumps(json.loads(tokenizer.read_text(encoding="utf-8"))), encoding="utf-8")
    manifest = read_manifest(damaged)
    from dataclasses import replace

    replace(manifest, tokenizer=runtime.artifact.FileEntry.of(tokenizer)).write(damaged)
    with pytest.raises(CorpusError, match="the model changed: tokenizer_sha256"):
        encode_files(source, out, model=damaged, provider="cpu", backend="onnxruntime", resume=True)
    source.write_text("one\ntwo\nthree!\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"the input changed: .*in\.txt"):
        encode_files(source, out, encoder=encoder, resume=True)
    source.write_text("one\ntwo\nthree\n", encoding="utf-8")
    result = encode_files(source, out, encoder=encoder, resume=True)
    assert (result.resumed_shards, result.shards, result.rows) == (1, 2, 3)


def test_folder_refusals_and_lock(pq: object, tmp_path: Path, encoder: runtime.Encoder) -> None:
    source = _txt(tmp_path / "in.txt", ["one"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.md").write_text("mine")
    with pytest.raises(CorpusError, match="not empty and holds no corpus job"):
        encode_files(source, tmp_path / "full", encoder=encoder)
    out = tmp_path / "emb"
    out.mkdir()
    with state.exclusive(out), pytest.raises(CorpusError, match="another job is writing"):
        encode_files(source, out, encoder=encoder)
    with pytest.raises(CorpusError, match="only a folder"):
        encode_files(source, tmp_path / "x.npy", encoder=encoder, resume=True)


def test_stdin_is_spooled_for_shards_and_streamed_for_files(
    pq: object, tmp_path: Path, encoder: runtime.Encoder
) -> None:
    lines = '{"text": "from stdin"}\n{"text": "second"}\n'
    for out in (tmp_path / "o.npy", tmp_path / "o"):
        cmd = [sys.executable, "-m", "runtime", "encode", "-", "-o", str(out), "--input-format", "jsonl", "-q"]
        cmd += ["--backend", "onnxruntime"]  # the fixture's engine, whatever auto picks on this CPU class
        done = subprocess.run(cmd, cwd=REPO, input=lines.encode(), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), encoder.encode(["from stdin", "second"]), atol=ATOL)
    ids, vectors = _read_folder(tmp_path / "o")
    assert ids == [0, 1] and np.array_equal(vectors, np.load(tmp_path / "o.npy"))
    assert json.loads((tmp_path / "o" / "_SUCCESS").read_text())["input"]["files"][0]["path"] == "-"
    assert sorted(os.listdir(tmp_path / "o")) == ["_SUCCESS", "_job.json", "part-00000.parquet"]


def test_resume_refuses_a_changed_engine_rule(pq: object, tmp_path: Path, encoder: runtime.Encoder) -> None:
    """Engines give close, not identical, vectors: a job started under one rule (e.g. auto on another CPU class, or
    another release's threshold) must not be finished under another."""
    source = _txt(tmp_path / "in.txt", ["one", "two", "three"])
    out = tmp_path / "emb"
    encode_files(source, out, encoder=encoder, shard_rows=2)
    (out / "_SUCCESS").unlink()
    (out / "part-00001.parquet").unlink()
    job = json.loads((out / "_job.json").read_text(encoding="utf-8"))
    assert job["model"]["rule"] == encoder.rule == "onnxruntime int8, every text"
    job["model"]["rule"] = "onnxruntime int8 below 48 tokens, openvino bf16 (form v1) from 48 tokens"
    (out / "_job.json").write_text(json.dumps(job), encoding="utf-8")
    with pytest.raises(CorpusError, match="the model changed: rule was 'onnxruntime int8 below 48 tokens"):
        encode_files(source, out, encoder=encoder, resume=True)


def test_check_refuses_to_compare_under_another_rule(finished: tuple[Path, Path], encoder: runtime.Encoder) -> None:
    source, out = finished
    summary = json.loads((out / "_SUCCESS").read_text(encoding="utf-8"))
    summary["model"]["rule"] = "openvino bf16 (OpenVINO form v1 of the int8 graph), every text"
    (out / "_SUCCESS").write_text(json.dumps(summary), encoding="utf-8")
    problems = check(out, source, encoder=encoder, sample=10).problems
    assert problems == [
        "the job's vectors were computed under the rule 'openvino bf16 (OpenVINO form v1 of the int8 graph), every "
        "text'; the library here runs 'onnxruntime int8, every text': vectors not compared (check where the job ran, "
        "or with an encoder loaded under its rule)"
    ]


# ---- the checker must catch what it claims to ----


@pytest.fixture()
def finished(pq: object, tmp_path: Path, encoder: runtime.Encoder) -> tuple[Path, Path]:
    source = _txt(tmp_path / "in.txt", dev_sentences()[:300])
    out = tmp_path / "emb"
    encode_files(source, out, encoder=encoder, shard_rows=100, window=50)
    return source, out


def _rewrite_shard(out: Path, name: str, change: object) -> None:
    """Replace a shard by a changed copy and update _SUCCESS to match, as a buggy writer would."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = out / name
    table = change(pq.read_table(path))  # type: ignore[operator]
    meta = pq.read_metadata(path).metadata
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), path)
    summary = json.loads((out / "_SUCCESS").read_text())
    for shard in summary["shards"]:
        if shard["file"] == name:
            shard["sha256"], shard["bytes"] = runtime.artifact.sha256_file(path), path.stat().st_size
    (out / "_SUCCESS").write_text(json.dumps(summary))
    del pa


def test_checker_passes_a_good_job(finished: tuple[Path, Path], encoder: runtime.Encoder) -> None:
    source, out = finished
    report = check(out, source, encoder=encoder, sample=300)
    assert report.ok, report.problems
    assert (report.rows, report.sampled, report.shards) == (300, 300, 3)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-6


def test_checker_catches_a_swapped_pair_of_ids(finished: tuple[Path, Path], encoder: runtime.Encoder) -> None:
    import pyarrow as pa

    def swap(table: pa.Table) -> pa.Table:
        ids = table.column("id").to_pylist()
        ids[3], ids[4] = ids[4], ids[3]
        return table.set_column(0, table.schema.field("id"), pa.array(ids, pa.int64()))

    source, out = finished
    _rewrite_shard(out, "part-00001.parquet", swap)
    report = check(out, source, encoder=encoder, sample=0)
    assert any("has id 104; the input at position 103 has id 103" in p for p in report.problems), report.problems


def test_checker_catches_a_dropped_row(finished: tuple[Path, Path], encoder: runtime.Encoder) -> None:
    source, out = finished
    _rewrite_shard(out, "part-00002.parquet", lambda t: t.slice(0, 99))
    problems = check(out, source, encoder=encoder, sample=0).problems
    assert any("ends after 99 rows; position 299" in p for p in problems), problems


def test_checker_catches_wrong_vectors(finished: tuple[Path, Path], encoder: runtime.Encoder) -> None:
    import pyarrow as pa

    def perturb(table: pa.Table) -> pa.Table:
        vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        vectors[7] = np.roll(vectors[7], 1)  # another unit vector: only comparing with the library catches it
        flat = pa.array(vectors.reshape(-1), pa.float32())
        return table.set_column(1, table.schema.field("embedding"), pa.FixedSizeListArray.from_arrays(flat, 384))

    source, out = finished
    _rewrite_shard(out, "part-00000.parquet", perturb)
    report = check(out, source, encoder=encoder, sample=300)
    assert any("differ from the library's" in p for p in report.problems), report.problems


def test_checker_catches_damaged_or_unlisted_shards(finished: tuple[Path, Path], encoder: runtime.Encoder) -> None:
    source, out = finished
    shutil.copy(out / "part-00000.parquet", out / "part-00003.parquet")
    with (out / "part-00001.parquet").open("r+b") as f:
        f.seek(100)
        f.write(b"\0")
    problems = check(out, source, encoder=encoder).problems
    assert any("part-00003.parquet is on disk but not listed" in p for p in problems), problems
    assert any("part-00001.parquet: size or sha256 differs" in p for p in problems), problems


def test_checker_catches_a_changed_input(finished: tuple[Path, Path], encoder: runtime.Encoder) -> None:
    source, out = finished
    source.write_text(source.read_text(encoding="utf-8").replace("A", "a", 1), encoding="utf-8")
    problems = check(out, source, encoder=encoder).problems
    assert any("not the one the job read" in p for p in problems), problems


def test_checker_needs_a_finished_job(pq: object, tmp_path: Path) -> None:
    (tmp_path / "emb").mkdir()
    with pytest.raises(CorpusError, match="no _SUCCESS"):
        check(tmp_path / "emb", tmp_path / "in.txt")
