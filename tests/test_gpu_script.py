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
