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


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv"])
def test_encode_file_to_npy_matches_library(kind: str, tmp_path: Path, encoder: runtime.Encoder) -> None:
    source = _write_inputs(tmp_path)[kind]
    out = tmp_path / "out.npy"
    args = ["--provider", "cpu", "encode", str(source), "-o", str(out)]
    main([*args, "--column", "sentence"] if kind == "csv" else args)
    np.testing.assert_allclose(np.load(out), encoder.encode(TEXTS), atol=1e-6)


def test_encode_to_jsonl_keeps_text_and_order(tmp_path: Path, encoder: runtime.Encoder) -> None:
    out = tmp_path / "out.jsonl"
    main(["encode", str(_write_inputs(tmp_path)["txt"]), "-o", str(out)])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), encoder.encode(TEXTS), atol=1e-6)


def test_missing_csv_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no column 'text'"):
        main(["encode", str(_write_inputs(tmp_path)["csv"]), "-o", str(tmp_path / "o.npy")])


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:2: field 'text' is int"):
        main(["encode", str(bad), "-o", str(tmp_path / "o.npy")])


def test_unsupported_output_type(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unsupported output type"):
        main(["encode", str(_write_inputs(tmp_path)["txt"]), "-o", str(tmp_path / "o.parquet")])


def test_missing_artifact_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"manifest missing"):
        main(["--model", str(tmp_path), "info"])


def test_info_reports_model_and_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--provider", "cpu", "info"])
    info = json.loads(capsys.readouterr().out)
    assert info["dimension"] == 384 and info["precision"] == "int8"
    assert info["variants"]["int8"]["present"] is True
    assert info["variants"]["int8"]["metrics"]["dev_spearman"] >= 0.893


def test_module_entry_point_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "runtime", "info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["max_seq_length"] == 256
