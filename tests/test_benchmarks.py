"""Smoke tests of ``python -m benchmarks --quick``: the result files' shape, never the speed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THROUGHPUT_KEYS = {"dev@1", "dev@32", "dev@128", "long@32"}
DOC_KEYS = {"machine", "versions", "baseline", "threads", "settings", "workloads", "ceiling", "systems", "elapsed_s"}


def run_quick(out: Path, systems: str, *extra: str) -> dict:
    """Run the quick benchmark into ``out`` and return its JSON document."""
    command = [sys.executable, "-m", "benchmarks", "--quick", "--systems", systems, "--out", str(out), *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (json_file,) = out.glob("*.json")
    return json.loads(json_file.read_text(encoding="utf-8"))


def table_rows(markdown: str, header_start: str) -> list[str]:
    """Body rows of the markdown table whose header row starts with ``header_start``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def check_measured(doc: dict, name: str) -> None:
    entry = doc["systems"][name]
    assert entry["status"] == "ok", entry["reason"]
    assert set(entry["best"]["throughput"]) == THROUGHPUT_KEYS
    assert all(v > 0 for v in entry["best"]["throughput"].values())
    assert entry["best"]["latency_ms"]["p50"] <= entry["best"]["latency_ms"]["p99"]
    assert entry["best"]["cold_start_s"] > 0 and entry["best"]["peak_rss_mb"] > 0
    assert entry["installed_mb"] > 0
    assert -1.0 <= entry["accuracy"]["spearman"] <= 1.0
    assert len(entry["rounds"]) == len(entry["cold"]) == 1


def check_files(out: Path, doc: dict) -> None:
    stem = out / doc["machine"]["name"]
    assert doc["machine"]["name"].startswith(f"cpu-{doc['machine']['cores']}core-")
    rows = table_rows(stem.with_suffix(".md").read_text(encoding="utf-8"), "| system | dev b1")
    measured = [name for name, s in doc["systems"].items() if s.get("best")]
    assert [row.split("|")[1].strip() for row in rows] == measured
    assert all(row.count("|") == 13 for row in rows)
    if importlib.util.find_spec("matplotlib") is not None:
        assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_run_of_this_runtime_writes_json_md_and_chart(tmp_path: Path) -> None:
    doc = run_quick(tmp_path, "runtime-int8")
    assert set(doc) >= DOC_KEYS
    assert doc["threads"] == 2 and doc["settings"]["rounds"] == 1
    assert doc["workloads"]["dev"]["texts"] == 32 and doc["workloads"]["long"]["mean_tokens"] >= 200
    assert doc["ceiling"]["gops"]["fp32_numpy"] > 0
    assert list(doc["systems"]) == ["runtime-int8"]
    check_measured(doc, "runtime-int8")
    assert "ratios" not in doc["systems"]["runtime-int8"]  # no baseline in this run
    check_files(tmp_path, doc)


def test_quick_run_with_pytorch_baseline_reports_ratios(
    tmp_path: Path, tiny_model_dir: Path, tiny_artifact: Path
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    doc = run_quick(
        tmp_path,
        "pytorch-fp32,runtime-fp32,runtime-int8",
        "--checkpoint",
        str(tiny_model_dir),
        "--artifact",
        str(tiny_artifact),
        "--cache",
        str(tmp_path / "cache"),
    )
    for name in ("pytorch-fp32", "runtime-fp32", "runtime-int8"):
        check_measured(doc, name)
        assert set(doc["systems"][name]["fidelity_to_baseline"]) == {"dev", "long"}
    assert doc["systems"]["pytorch-fp32"]["ratios"]["dev@32"] == pytest.approx(1.0)
    assert set(doc["systems"]["runtime-int8"]["ratios"]) >= THROUGHPUT_KEYS
    check_files(tmp_path, doc)


def test_unknown_system_is_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks", "--quick", "--systems", "no-such-system", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no-such-system" in done.stderr
    assert not list(tmp_path.iterdir())
