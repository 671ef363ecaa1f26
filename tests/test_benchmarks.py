"""Smoke runs of ``python -m benchmarks --quick``: every peer adapter runs, the figures are wired to the right texts and
baselines, the result files are complete, and a failing peer stays visible. Never the speed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.data import gold_scores, pair_texts, read_sts, score_stacked

REPO = Path(__file__).resolve().parents[1]
THROUGHPUT_KEYS = {"dev@1", "dev@32", "dev@128", "long@32"}
DOC_KEYS = {"machine", "versions", "baseline", "threads", "settings", "workloads", "ceiling", "systems", "elapsed_s"}
QUICK_DEV_PAIRS = 16  # benchmarks.config.QUICK
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_quick(out: Path, systems: str, *extra: str) -> dict:
    """Run the quick benchmark into ``out`` and return its JSON document."""
    command = [sys.executable, "-m", "benchmarks", "--quick", "--systems", systems, "--out", str(out), *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
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


def check_measured(doc: dict, name: str) -> dict:
    """The system ran one round with every figure present and self-consistent; returns its entry."""
    entry = doc["systems"][name]
    assert entry["status"] == "ok", entry["reason"]
    best = entry["best"]
    assert set(best["throughput"]) == THROUGHPUT_KEYS
    assert best["throughput"] == entry["rounds"][0]["throughput"], "one round: best is that round"
    assert best["latency_ms"]["p50"] <= best["latency_ms"]["p99"]
    assert best["cold_start_s"] == pytest.approx(
        sum(entry["cold"][0][k] for k in ("interpreter_s", "import_load_s", "first_embed_s")), abs=0.05
    )
    assert len(entry["rounds"]) == len(entry["cold"]) == 1
    assert entry["model_mb"] == pytest.approx(
        sum(Path(f).stat().st_size for f in entry["model_files"]) / 2**20, rel=1e-6
    )
    return entry


def check_roofline(doc: dict, name: str) -> None:
    """Roofline shares use the GEMM rate of the system's own precision and its own truncation."""
    entry, gops = doc["systems"][name], doc["ceiling"]["gops"]
    rate = max(v for k, v in gops.items() if k.startswith(entry["precision"] + "_"))
    truncation = entry["notes"]["max_seq_length"]
    assert truncation == 256, "every system here keeps the model's 256-token window"
    for key, share in entry["roofline_pct"].items():
        flops = doc["ceiling"]["flops_per_text"][key.split("@")[0]]
        assert share == pytest.approx(100 * entry["best"]["throughput"][key] * flops / (rate * 1e9), rel=1e-9)


def check_files(out: Path, doc: dict) -> None:
    machine = doc["machine"]
    assert machine["name"] == f"cpu-{machine['cores']}core-" + machine["name"].split("core-", 1)[1]
    assert machine["name"].endswith("-" + machine["isa_class"]), "results are keyed by instruction-set class"
    stem = out / machine["name"]
    markdown = stem.with_suffix(".md").read_text(encoding="utf-8")
    rows = table_rows(markdown, "| system | dev b1")
    measured = [name for name, s in doc["systems"].items() if s.get("best")]
    assert [row.split("|")[1].strip() for row in rows] == measured
    assert all(row.count("|") == 13 for row in rows)
    for name, entry in doc["systems"].items():
        if entry["status"] != "ok":
            assert f"- **{name}** {entry['status']}: {entry['reason']}" in markdown, "unmeasured systems are listed"
    assert stem.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC


def test_quick_run_of_this_runtime_scores_the_right_pairs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the chart needs the bench extra")
    doc = run_quick(tmp_path, "runtime-int8")
    assert set(doc) >= DOC_KEYS
    assert doc["threads"] == 2 and doc["settings"]["rounds"] == 1
    assert doc["workloads"]["dev"]["texts"] == 2 * QUICK_DEV_PAIRS and doc["workloads"]["long"]["mean_tokens"] >= 200
    assert list(doc["systems"]) == ["runtime-int8"]
    entry = check_measured(doc, "runtime-int8")
    assert "ratios" not in entry  # no baseline in this run
    # The benchmark's accuracy is the shipped model's on the same pairs, scored independently here.
    pairs = read_sts("dev")[:QUICK_DEV_PAIRS]
    portable = runtime.load(provider="cpu", backend="onnxruntime")  # runtime-int8 is the onnxruntime path
    reference = score_stacked(portable.encode(pair_texts(pairs), batch_size=32), gold_scores(pairs))
    assert entry["accuracy"]["spearman"] == pytest.approx(reference.spearman, abs=1e-9)
    assert entry["accuracy"]["pearson"] == pytest.approx(reference.pearson, abs=1e-6)
    assert entry["accuracy"]["spearman"] >= 0.85, "the fine-tuned model ranks these pairs as the full dev set does"
    assert entry["batch_1_vs_32_cosine"]["min"] >= 1 - 1e-9, "this runtime's int8 is batch-invariant"
    check_roofline(doc, "runtime-int8")
    check_files(tmp_path, doc)


SMOKE_SYSTEMS = (
    "pytorch-fp32",
    "st-onnx-int8",
    "fastembed-fp32",
    "openvino-int8",
    "runtime-fp32",
    "runtime-int8",
    "ctranslate2-int8",
)


@pytest.mark.slow
def test_quick_run_of_every_adapter_against_the_pytorch_baseline(
    tmp_path: Path, tiny_model_dir: Path, tiny_artifact: Path
) -> None:
    """One system per peer adapter (int8 where the adapter builds one) on the tiny model, offline."""
    pytest.importorskip("optimum.intel", reason="the peers need the bench extra")
    pytest.importorskip("fastembed", reason="the peers need the bench extra")
    out = tmp_path / "out"
    doc = run_quick(
        out,
        ",".join(SMOKE_SYSTEMS),
        *("--checkpoint", str(tiny_model_dir), "--artifact", str(tiny_artifact), "--cache", str(tmp_path / "cache")),
    )
    assert list(doc["systems"]) == list(SMOKE_SYSTEMS)
    base = check_measured(doc, "pytorch-fp32")
    for name in SMOKE_SYSTEMS:
        entry = check_measured(doc, name)
        check_roofline(doc, name)
        ratios = entry["ratios"]
        for key in THROUGHPUT_KEYS:
            assert ratios[key] == pytest.approx(entry["best"]["throughput"][key] / base["best"]["throughput"][key])
        assert ratios["latency_p50"] == pytest.approx(
            entry["best"]["latency_ms"]["p50"] / base["best"]["latency_ms"]["p50"]
        )
        # Every system embeds the same model: its vectors match PyTorch's text by text (int8 within its error).
        floor = 0.9999 if entry["precision"] == "fp32" else 0.98
        for part in ("dev", "long"):
            assert entry["fidelity_to_baseline"][part]["min"] >= floor, (name, part, entry["fidelity_to_baseline"])
        assert entry["accuracy"]["pearson"] == pytest.approx(base["accuracy"]["pearson"], abs=0.02), name
    assert base["ratios"]["dev@32"] == pytest.approx(1.0)
    assert doc["systems"]["runtime-int8"]["batch_1_vs_32_cosine"]["min"] >= 1 - 1e-6
    # sentence-transformers names its int8 file after the preset's weight type (quint8 on AVX2, qint8 elsewhere).
    record = json.loads((tmp_path / "cache" / "st-onnx" / "bench-source.json").read_text(encoding="utf-8"))
    assert doc["systems"]["st-onnx-int8"]["notes"]["graph"] == record["int8"]
    assert record["int8"].endswith(f"int8_{record['int8_preset']}.onnx")
    assert doc["systems"]["fastembed-fp32"]["notes"]["graph"] == "onnx/model.onnx"
    check_files(out, doc)


def test_sentence_transformers_int8_graph_is_found_for_every_preset(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AVX2 preset writes ``model_quint8_avx2.onnx`` (uint8 weights); the adapter must find what was written, and
    rebuild a cache made on another CPU class instead of loading its graph."""
    pytest.importorskip("optimum.onnxruntime", reason="the peers need the bench extra")
    from benchmarks.config import QUICK, Paths
    from benchmarks.peers import st_onnx
    from benchmarks.systems import BY_NAME

    paths = Paths(tiny_model_dir, tiny_model_dir, tmp_path / "cache")
    system = BY_NAME["st-onnx-int8"]
    for flags, preset, weights in (
        (["avx2", "fma"], "avx2", "quint8"),
        (["avx2", "avx512f", "avx512_vnni"], "avx512_vnni", "qint8"),
    ):
        monkeypatch.setattr(st_onnx, "cpu_flags", lambda flags=flags: flags)
        assert st_onnx.quantization_target() == preset
        st_onnx.prepare(system, paths, QUICK)
        graph = st_onnx.graph_file(paths, "int8")
        assert graph == f"onnx/model_{weights}_{preset}.onnx"
        assert (st_onnx.model_folder(paths) / graph).is_file()
        vectors = st_onnx.load(system, paths, threads=1).embed(["a test sentence", "another one"], 2)
        assert vectors.shape == (2, 32) and np.isfinite(vectors).all()
    monkeypatch.setattr(st_onnx, "cpu_flags", lambda: ["avx2"])
    with pytest.raises(RuntimeError, match="no int8 graph for preset 'avx2'"):
        st_onnx.graph_file(paths, "int8")  # the cache holds the VNNI graph: never loaded on another class


def test_failing_peer_is_reported_and_the_others_still_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("matplotlib", reason="the chart needs the bench extra")
    pytest.importorskip("optimum.onnxruntime", reason="the peers need the bench extra")
    broken = tmp_path / "broken-checkpoint"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "out"
    doc = run_quick(out, "st-onnx-fp32,runtime-int8", "--checkpoint", str(broken), "--cache", str(tmp_path / "cache"))
    failed = doc["systems"]["st-onnx-fp32"]
    assert failed["status"] == "failed" and failed["reason"].startswith("prepare: ")
    check_measured(doc, "runtime-int8")
    check_files(out, doc)
    assert not (tmp_path / "cache" / "st-onnx").exists(), "a failed build leaves no half-written cache"


def test_unknown_system_is_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks", "--quick", "--systems", "no-such-system", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no-such-system" in done.stderr
    assert not list(tmp_path.iterdir())


def test_quick_run_never_writes_into_the_committed_results() -> None:
    from benchmarks.__main__ import parse
    from benchmarks.config import DEFAULT_OUT

    assert parse(["--quick"]).out != DEFAULT_OUT
    assert parse([]).out == DEFAULT_OUT


def test_shorter_runs_change_only_the_sizes_asked_for(tmp_path: Path) -> None:
    from benchmarks.__main__ import main, parse, settings_of
    from benchmarks.config import FULL

    settings = settings_of(parse(["--batch-sizes", "1,32", "--long-passages", "64"]))
    assert (settings.batch_sizes, settings.long_passages) == ((1, 32), 64)
    assert settings.dev_pairs == FULL.dev_pairs and settings.latency_calls == FULL.latency_calls
    with pytest.raises(SystemExit, match="must include 1 and accuracy_batch 32"):
        main(["--batch-sizes", "8,128", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_render_rewrites_md_from_a_result_file(tmp_path: Path) -> None:
    """The committed results render with today's report code (what README's tables are checked against)."""
    pytest.importorskip("matplotlib", reason="the chart needs the bench extra")
    results = sorted((REPO / "benchmarks" / "results").glob("cpu-*.json"))
    assert results, "no committed benchmark results"
    for source in results:
        copy = tmp_path / source.name
        shutil.copy(source, copy)
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--render", str(copy)], cwd=REPO, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert copy.with_suffix(".md").read_text(encoding="utf-8") == source.with_suffix(".md").read_text(
            encoding="utf-8"
        ), f"{source.with_suffix('.md').name} is stale: python -m benchmarks --render {source}"
        assert copy.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
