"""Smoke test of ``python -m studies.corpus scale`` (the many-core Ray measurement): the result files' shape and
that every run encoded what it was given, never the speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_scale_benchmark_writes_json_and_markdown(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    command = [
        sys.executable,
        "-m",
        "studies.corpus",
        "scale",
        "--out",
        str(tmp_path),
        "--actors",
        "1,2",
        "--texts-per-actor",
        "300",
        "--window",
        "100",
        "--work",
        str(tmp_path / "work"),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (json_file,) = tmp_path.glob("corpus-scale-*.json")
    doc = json.loads(json_file.read_text(encoding="utf-8"))
    runs = doc["scale"]["runs"]
    assert {a: r["texts"] for a, r in runs.items()} == {"1": 300, "2": 600}
    assert {a: r["shards"] for a, r in runs.items()} == {"1": 3, "2": 6}  # 4 per actor asked, whole 100-text windows
    assert doc["scale"]["efficiency_vs_linear"]["1"] == 1.0
    markdown = json_file.with_suffix(".md").read_text(encoding="utf-8")
    assert "| 2 | 600 |" in markdown and doc["machine"]["cores"] >= 1
