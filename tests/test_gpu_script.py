"""benchmarks/gpu.py, the one-shot GPU run, in its CPU smoke mode on the tiny exported model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_gpu_benchmark_smoke_on_cpu(tiny_model_dir: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gpu",
        "--checkpoint",
        str(tiny_model_dir),
        "--artifact",
        str(tiny_artifact),
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--quick",
    ]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["system"] for r in report["results"]] == ["runtime fp16 cpu", "pytorch fp32 cpu"]
    for result in report["results"]:
        assert set(result["dev_sent_per_s"]) == {"1", "32"} and result["latency_ms"]["p50"] > 0
    assert "| dev_sent_per_s batch 32 |" in (tmp_path / "gpu.md").read_text()
