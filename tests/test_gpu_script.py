"""benchmarks/gpu.py, the one-shot GPU run, in its CPU smoke mode on the tiny exported model."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def test_gpu_benchmark_smoke_on_cpu(tiny_model_dir: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from sentence_transformers import SentenceTransformer

    from export.data import dev_sentences

    reference = tmp_path / "dev_fp32.npy"  # what gpu_payload.py ships: PyTorch fp32 on all 3,000 dev sentences
    np.save(reference, SentenceTransformer(str(tiny_model_dir), device="cpu").encode(dev_sentences()))
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gpu",
        "--checkpoint",
        str(tiny_model_dir),
        "--artifact",
        str(tiny_artifact),
        "--reference",
        str(reference),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quick",
    ]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    rt, pt = report["results"]
    assert (rt["system"], pt["system"]) == ("runtime", "pytorch") and rt["status"] == pt["status"] == "ok"
    assert rt["info"]["session_providers"] == ["CPUExecutionProvider"] and rt["info"]["precision"] == "fp16"
    for result in (rt, pt):
        assert set(result["dev_sent_per_s"]) == {"1", "32"} and set(result["long_sent_per_s"]) == {"32"}
    # PyTorch fp32 against its own fp32 embeddings: the rows must line up with the reference's (quick = 32 pairs)
    assert pt["accuracy"]["min_cosine_to_fp32"] > 0.99999
    assert rt["accuracy"]["min_cosine_to_fp32"] > 0.99, "fp16 graph vs fp32 PyTorch on the same texts"
    assert [g["goal"] for g in report["goals"]] == ["p50 latency batch 1 below PyTorch's"]  # quick: no batch >= 128
    assert report["goals"][0]["met"] == (rt["latency_ms"]["p50"] < pt["latency_ms"]["p50"])
    text = (out / "gpu.md").read_text()
    assert "CPUExecutionProvider" in text and "| STS-B dev, texts/s, batch 32 |" in text
    if importlib.util.find_spec("matplotlib"):
        assert (out / "gpu.png").stat().st_size > 10_000


def _result(dev: dict[int, float], long: dict[int, float], p50: float) -> dict:
    wrap = lambda d: {str(b): {"best": v} for b, v in d.items()}  # noqa: E731
    return {"dev_sent_per_s": wrap(dev), "long_sent_per_s": wrap(long), "latency_ms": {"p50": p50}}


def test_goals_are_judged_at_batch_128_and_512_and_p50() -> None:
    from benchmarks.gpu import goals

    rt = _result({1: 900, 128: 12_000, 512: 14_000}, {128: 2_400, 512: 2_300}, 1.0)
    pt = _result({1: 300, 128: 10_000, 512: 11_000}, {128: 1_900, 512: 2_000}, 2.5)
    checks = {g["goal"]: g for g in goals(rt, pt)}
    assert [c["met"] for c in checks.values()] == [True, True, True, False, True]  # long b512: 1.15x < 1.2x
    assert checks["long throughput batch 512 >= 1.2x PyTorch"]["ratio"] == pytest.approx(1.15)
    assert not any(g["met"] for g in goals(rt, _result({128: 10_001, 512: 11_700}, {128: 2_001, 512: 1_917}, 0.9)))


def test_gpu_facts_come_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.gpu import device_memory_mib, environment

    fake = tmp_path / "nvidia-smi"  # answers as the driver's tool does for the two queries gpu.py makes
    fake.write_text(
        '#!/bin/sh\ncase "$1" in *memory.used*) echo "1234" ;; '
        '*) echo "NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB" ;; esac\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # take the nvidia-smi path even where NVML bindings exist
    env = environment("cuda")
    assert (env["gpu"], env["driver"], env["gpu_memory_total"]) == ("NVIDIA H100 80GB HBM3", "580.159.04", "81559 MiB")
    assert device_memory_mib() == 1234.0


def test_full_gpu_report_names_the_gpu_provider_and_goals(tmp_path: Path) -> None:
    from benchmarks.gpu import chart, goals, markdown

    def system(name: str, scale: float, p50: float, memory: float) -> dict:
        result = _result({b: scale * b for b in (1, 32, 128, 512)}, {b: scale * b / 10 for b in (32, 128, 512)}, p50)
        result["latency_ms"]["p99"] = 2 * p50
        info = {
            "onnxruntime_build": "onnxruntime-gpu 1.31.1",
            "session_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "precision": "fp16",
            "cuda_without_torch": "ok",
        }
        if name == "pytorch":
            info = {"torch": "2.11.0+cu130", "dtype": "torch.float16", "attention": "sdpa"}
        accuracy = {"dev_spearman": 0.894, "min_cosine_to_fp32": 0.9999, "mean_cosine_to_fp32": 0.99999}
        return {
            **result,
            "system": name,
            "status": "ok",
            "info": info,
            "accuracy": accuracy,
            "load_s": 1.0,
            "gpu_memory_mib": memory,
        }

    rt, pt = system("runtime", 1.5, 0.8, 600.0), system("pytorch", 1.0, 3.0, 900.0)
    labels = {"runtime": "runtime fp16 (CUDAExecutionProvider)", "pytorch": "PyTorch fp16 (sentence-transformers)"}
    env = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "driver": "580.159.04",
        "cpu": "x",
        "python": "3.12.3",
        "sentence-transformers": "6.0.1",
    }
    report = {
        "title": f"{labels['runtime']} vs {labels['pytorch']} on {env['gpu']}",
        "created": "now",
        "labels": labels,
        "environment": env,
        "results": [rt, pt],
        "goals": goals(rt, pt),
    }
    text = markdown(report)
    assert "NVIDIA H100 80GB HBM3" in text and "['CUDAExecutionProvider', 'CPUExecutionProvider']" in text
    assert text.count("| yes |") == 5 and "| GPU memory added by the process, MiB | 600 | 900 | 0.67x |" in text
    assert "| 200-256-token passages, texts/s, batch 512 | 77 | 51 | 1.50x |" in text
    if importlib.util.find_spec("matplotlib"):
        assert chart(report, tmp_path / "gpu.png") is not None and (tmp_path / "gpu.png").stat().st_size > 10_000
