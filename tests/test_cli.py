"""``python -m runtime``: encode .txt/.jsonl/.csv files and show model info."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.__main__ import main

TEXTS = ["A man is playing a guitar.", "Une phrase en français.", "", "Two dogs run, fast."]


def _write_inputs(folder: Path) -> dict[str, Path]:
    txt = folder / "in.txt"
    txt.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    jsonl = folder / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    csv_path = folder / "in.csv"
    csv_path.write_text("id,sentence\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS)), encoding="utf-8")
    return {"txt": txt, "jsonl": jsonl, "csv": csv_path}


@pytest.fixture(scope="module")
def auto_encoder() -> runtime.Encoder:
    """What the CLI loads without model options: backend="auto" (its engines depend on the CPU class)."""
    return runtime.load(provider="cpu")


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv"])
def test_encode_file_to_npy_matches_library(kind: str, tmp_path: Path, auto_encoder: runtime.Encoder) -> None:
    source = _write_inputs(tmp_path)[kind]
    out = tmp_path / "out.npy"
    args = ["--provider", "cpu", "encode", str(source), "-o", str(out)]
    main([*args, "--column", "sentence"] if kind == "csv" else args)
    np.testing.assert_allclose(np.load(out), auto_encoder.encode(TEXTS), atol=1e-6)


def test_encode_to_jsonl_keeps_text_and_order(tmp_path: Path, auto_encoder: runtime.Encoder) -> None:
    out = tmp_path / "out.jsonl"
    main(["encode", str(_write_inputs(tmp_path)["txt"]), "-o", str(out)])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), auto_encoder.encode(TEXTS), atol=1e-6)


def test_missing_csv_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no column 'text'"):
        main(["encode", str(_write_inputs(tmp_path)["csv"]), "-o", str(tmp_path / "o.npy")])


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:2: field 'text' is int"):
        main(["encode", str(bad), "-o", str(tmp_path / "o.npy")])


def test_unsupported_output_type(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"unsupported output type '\.csv'"):
        main(["encode", str(_write_inputs(tmp_path)["txt"]), "-o", str(tmp_path / "o.csv")])


@pytest.mark.parametrize("where", ["before", "after"])
def test_model_options_before_or_after_the_subcommand(where: str, tmp_path: Path, damaged: Path) -> None:
    source = str(_write_inputs(tmp_path)["txt"])
    options = ["--model", str(damaged), "--provider", "cpu", "--precision", "fp32"]  # the copy has no fp32 graph
    encode = ["encode", source, "-o", str(tmp_path / "o.npy")]
    argv = [*options, *encode] if where == "before" else [*encode, *options]
    with pytest.raises(SystemExit, match=r"model\.fp32\.onnx: fp32 graph not present"):
        main(argv)
    main([*encode, "--provider", "cpu", "--model", str(damaged)])  # and they take effect
    assert np.load(tmp_path / "o.npy").shape == (len(TEXTS), 384)


def test_short_csv_row_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "short.csv"
    bad.write_text("id,text\n1,fine\n2\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"short\.csv:3: row has 1 fields, no value for column 'text'"):
        main(["encode", str(bad), "-o", str(tmp_path / "o.npy")])


def test_invalid_numbers_are_clean_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="window must be a positive int, got 0"):
        main(["encode", str(_write_inputs(tmp_path)["txt"]), "-o", str(tmp_path / "o.npy"), "--window", "0"])


def test_check_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyarrow")
    source = str(_write_inputs(tmp_path)["jsonl"])
    main(["encode", source, "-o", str(tmp_path / "emb"), "--id-column", "id", "-q"])
    main(["check", str(tmp_path / "emb"), source])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["rows"] == report["sampled"] == len(TEXTS)
    (tmp_path / "emb" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"check failed: .*part-00000\.parquet: size or sha256 differs"):
        main(["check", str(tmp_path / "emb"), source])


def test_missing_artifact_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"manifest missing"):
        main(["--model", str(tmp_path), "info"])


def test_info_reports_what_the_artifact_folder_holds(damaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (damaged / "model.fp32.onnx").write_bytes(b"")  # present, though not loadable: info reports files, not loads
    main(["info", "--model", str(damaged), "--provider", "cpu"])
    info = json.loads(capsys.readouterr().out)
    manifest = json.loads((damaged / "manifest.json").read_text(encoding="utf-8"))
    assert Path(info["artifact"]) == damaged
    assert (info["device"], info["precision"], info["dimension"]) == ("cpu", "int8", manifest["dimension"])
    assert {p: v["present"] for p, v in info["variants"].items()} == {
        p: (damaged / v["graph"]["file"]).is_file() for p, v in manifest["variants"].items()
    }
    assert info["variants"]["fp32"]["present"] and not info["variants"]["fp16"]["present"]
    assert {p: v["metrics"] for p, v in info["variants"].items()} == {
        p: v["metrics"] for p, v in manifest["variants"].items()
    }


def test_module_entry_point_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "runtime", "info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["max_seq_length"] == 256
