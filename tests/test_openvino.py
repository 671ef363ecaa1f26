"""The OpenVINO backend (``backend="openvino"``) and the rule of ``backend="auto"``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.artifact import Precision
from runtime.backends import OPENVINO_INSTALL, Backend, auto_backend
from runtime.errors import ArtifactError

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "A man is playing a guitar.",
    "",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Une phrase en français, avec des accents.",
    "short",
    "word " * 300,  # truncated to max_seq_length
]

# ---- the auto rule and the errors: no openvino needed ----


@pytest.fixture()
def openvino_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """openvino installed on x86-64, and the rule's OpenVINO branch switched on."""
    monkeypatch.setattr("runtime.backends.openvino_installed", lambda: True)
    monkeypatch.setattr("runtime.backends.platform.machine", lambda: "x86_64")
    monkeypatch.setattr("runtime.backends.AUTO_PICKS_OPENVINO", True)


def test_auto_keeps_onnxruntime_while_openvino_is_not_the_faster_default(default_dir: Path) -> None:
    choice = auto_backend("cpu", Precision.INT8, ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"))
    assert choice.backend is Backend.ONNXRUNTIME
    encoder = runtime.load(default_dir, provider="cpu")
    assert (encoder.backend, encoder.info["auto"]) == ("onnxruntime", choice.reason)


@pytest.mark.parametrize("flags", [("avx512f", "avx512_vnni", "avx512_bf16"), ("avx512f", "amx_bf16", "amx_int8")])
def test_auto_picks_openvino_for_int8_on_bf16_cpus(openvino_present: None, flags: tuple[str, ...]) -> None:
    assert auto_backend("cpu", Precision.INT8, flags).backend is Backend.OPENVINO


@pytest.mark.parametrize(
    ("device", "precision", "flags"),
    [
        ("cpu", Precision.INT8, ("avx2", "fma")),  # AVX2 CPU
        ("cpu", Precision.INT8, ("avx512f", "avx512bw", "avx512_vnni")),  # AVX-512 without bf16 (Ice Lake, Zen 3)
        ("cpu", Precision.FP32, ("avx512_bf16",)),  # not the int8 graph
        ("cuda", Precision.FP16, ("avx512_bf16",)),
    ],
)
def test_auto_keeps_onnxruntime_otherwise(
    openvino_present: None, device: str, precision: Precision, flags: tuple[str, ...]
) -> None:
    assert auto_backend(device, precision, flags).backend is Backend.ONNXRUNTIME


def test_auto_without_the_extra_uses_onnxruntime_and_says_why(openvino_present: None, monkeypatch) -> None:
    monkeypatch.setattr("runtime.backends.openvino_installed", lambda: False)
    choice = auto_backend("cpu", Precision.INT8, ("avx512_bf16",))
    assert choice.backend is Backend.ONNXRUNTIME
    assert OPENVINO_INSTALL in choice.reason


def test_bad_backend_names_the_allowed_values(default_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'onnxruntime', 'openvino'\], got 'ov'"):
        runtime.load(default_dir, backend="ov")


def test_openvino_with_cuda_is_refused(default_dir: Path) -> None:
    with pytest.raises(runtime.BackendUnavailable, match="CPU only"):
        runtime.load(default_dir, provider="cuda", backend="openvino")


def test_missing_openvino_names_the_extra(default_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(runtime.BackendUnavailable, match=r"pip install 'minilm-stsb-onnx\[openvino\]'"):
        runtime.load(default_dir, backend="openvino")


def test_auto_falls_back_to_onnxruntime_when_openvino_fails(
    default_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("runtime.encoder.auto_backend", lambda device, precision: _openvino_choice())
    monkeypatch.setitem(sys.modules, "openvino", None)
    with caplog.at_level(logging.WARNING, logger="runtime.encoder"):
        encoder = runtime.load(default_dir)
    assert encoder.backend == "onnxruntime"
    assert "OpenVINO unusable" in caplog.text
    assert "OpenVINO failed" in str(encoder.info["auto"])


def _openvino_choice() -> object:
    from runtime.backends import AutoChoice

    return AutoChoice(Backend.OPENVINO, "forced by the test")


def test_onnxruntime_info(default_dir: Path) -> None:
    info = runtime.load(default_dir, provider="cpu", backend="onnxruntime").info
    assert (info["backend"], info["device"], info["graph_precision"], info["inference_precision"]) == (
        "onnxruntime",
        "cpu",
        "int8",
        "f32",
    )
    assert info["auto"] is None  # chosen explicitly


# ---- the OpenVINO path itself ----


# OpenVINO 2026.4 cannot convert the lean int8 graph (blocked QuantizeLinear-21 feeding MatMulIntegerToFloat), so the
# backend runs the graphs it converts: the export's fp32 (and fp16) graphs, here the tiny model's.


@pytest.fixture(scope="module")
def ov_dir(tiny_artifact: Path) -> Path:
    pytest.importorskip("openvino")
    return tiny_artifact


@pytest.fixture(scope="module")
def ov_encoder(ov_dir: Path) -> runtime.Encoder:
    return runtime.load(ov_dir, precision="fp32", backend="openvino")


def test_openvino_refuses_the_lean_int8_graph_naming_the_engine(default_dir: Path, ov_dir: Path) -> None:
    """The shipped (and every exported) int8 graph: a clear ArtifactError at load, never a crash or a silent fallback;
    this test fails once OpenVINO converts the graph, which is the moment to measure it again."""
    for folder in (default_dir, ov_dir):
        with pytest.raises(ArtifactError, match="OpenVINO cannot compile the graph"):
            runtime.load(folder, precision="int8", backend="openvino")


def test_openvino_info_reports_what_it_compiled(ov_encoder: runtime.Encoder) -> None:
    info = ov_encoder.info
    assert (info["backend"], info["device"], info["graph_precision"]) == ("openvino", "cpu", "fp32")
    # f32, whatever OpenVINO's own default for this CPU (bf16 where the CPU has it) would be
    assert info["inference_precision"] == "f32"
    assert info["config"]["NUM_STREAMS"] == 1
    assert isinstance(info["compile_seconds"], float)


def test_openvino_vectors_track_onnxruntime(ov_encoder: runtime.Encoder, ov_dir: Path) -> None:
    portable = runtime.load(ov_dir, precision="fp32", backend="onnxruntime")
    ours, theirs = ov_encoder.encode(TEXTS), portable.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_openvino_text_alone_equals_text_in_padded_batches(ov_encoder: runtime.Encoder, dev_pairs: list) -> None:
    """Padding changes OpenVINO's vectors (up to 4.7e-3 on these texts when batches are padded): the backend must
    run rows of one length together, so a text's vector is the same alone and in any batch."""
    texts = [p.s1 for p in dev_pairs[:300]]
    alone = np.stack([ov_encoder.encode(t) for t in texts])
    for batch_size in (7, 32):
        np.testing.assert_allclose(ov_encoder.encode(texts, batch_size=batch_size), alone, atol=1e-4, rtol=0)
    # A caller-built run of mixed lengths (the server's embed_ids) is split the same way.
    ids = ov_encoder.tokenize(texts[:40])
    np.testing.assert_allclose(ov_encoder.embed_ids(ids), alone[:40], atol=1e-4, rtol=0)


def test_openvino_batch_plan_holds_one_length_per_run(ov_encoder: runtime.Encoder) -> None:
    ids = ov_encoder.tokenize(TEXTS * 9)
    plan = ov_encoder.batch_plan(ids, batch_size=8)
    assert sorted(i for run in plan for i in run) == list(range(len(ids)))
    assert all(len({len(ids[i]) for i in run}) == 1 and len(run) <= 8 for run in plan)


def test_openvino_encoder_is_thread_safe(ov_encoder: runtime.Encoder, dev_pairs: list) -> None:
    """One encoder, eight threads at once: each gets exactly what a lone call gets (a shared infer request would
    mix or refuse their batches)."""
    texts = [p.s2 for p in dev_pairs[:64]]
    want = ov_encoder.encode(texts, batch_size=8)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = ov_encoder.encode(texts[i:] + texts[:i], batch_size=8)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, got in results.items():
        np.testing.assert_array_equal(got, np.roll(want, -i, axis=0))


def test_auto_choice_is_logged_when_openvino_is_picked(
    ov_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("runtime.encoder.auto_backend", lambda device, precision: _openvino_choice())
    with caplog.at_level(logging.INFO, logger="runtime.encoder"):
        encoder = runtime.load(ov_dir, provider="cpu", precision="fp32")
    assert encoder.backend == "openvino"
    assert encoder.info["auto"] == "forced by the test"
    assert "fp32 f32 inference: vectors close to, not bit-identical with, the portable onnxruntime" in caplog.text
    assert caplog.records[-1].levelno == logging.INFO


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a process allowed on 2+ CPUs")
def test_openvino_stays_on_the_process_cpus(ov_dir: Path) -> None:
    """Held to one CPU, OpenVINO uses one thread, and no thread it starts may run elsewhere."""
    cpu = min(os.sched_getaffinity(0))
    probe = f"""
import json, os, sys
os.sched_setaffinity(0, {{{cpu}}})
import runtime
enc = runtime.load(sys.argv[1], precision="fp32", backend="openvino")
enc.encode(["warm the pool up"] * 8)
allowed = set()
for task in os.listdir("/proc/self/task"):
    allowed |= os.sched_getaffinity(int(task))
print(json.dumps({{"threads": enc.info["threads"], "allowed": sorted(allowed)}}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(ov_dir)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"threads": 1, "allowed": [cpu]}


def test_cli_backend_option(ov_dir: Path, ov_encoder: runtime.Encoder, tmp_path: Path) -> None:
    from runtime.__main__ import main

    source = tmp_path / "in.txt"
    source.write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    model = ["--model", str(ov_dir), "--precision", "fp32"]
    main(["--backend", "openvino", *model, "encode", str(source), "-o", str(out), "-q"])
    np.testing.assert_allclose(np.load(out), ov_encoder.encode([t for t in TEXTS if t]), atol=1e-6, rtol=0)
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "info", "--backend", "openvino", *model],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["backend"], info["engine"]["backend"]) == ("openvino", "openvino")


def test_bf16_inference_is_opt_in(ov_dir: Path, ov_encoder: runtime.Encoder, monkeypatch) -> None:
    """bf16 failed the cosine gate on the previous int8 graph (0.98997 < 0.99), so only the variable turns it on."""
    from runtime.cpu import isa_flags

    if not {"avx512_bf16", "amx_bf16"} & set(isa_flags()):
        pytest.skip("this CPU has no bf16 instructions")
    monkeypatch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", "bf16")
    bf16 = runtime.load(ov_dir, precision="fp32", backend="openvino")
    assert bf16.info["inference_precision"] == "bf16"
    assert not np.array_equal(bf16.encode(TEXTS), ov_encoder.encode(TEXTS))
    monkeypatch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", "fp8")
    with pytest.raises(ValueError, match="MINILM_OPENVINO_INFERENCE_PRECISION must be one of"):
        runtime.load(ov_dir, precision="fp32", backend="openvino")


def test_compiled_model_cache(ov_dir: Path, ov_encoder: runtime.Encoder, tmp_path: Path, monkeypatch) -> None:
    """The first load writes OpenVINO's compiled blob to the cache folder, the next one imports it and gives the same
    vectors; an empty MINILM_OPENVINO_CACHE_DIR writes nothing."""
    monkeypatch.setenv("MINILM_OPENVINO_CACHE_DIR", str(tmp_path / "cache"))
    first = runtime.load(ov_dir, precision="fp32", backend="openvino")
    assert (first.info["cache_dir"], first.info["loaded_from_cache"]) == (str(tmp_path / "cache"), False)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".blob"]
    second = runtime.load(ov_dir, precision="fp32", backend="openvino")
    assert second.info["loaded_from_cache"] is True
    np.testing.assert_array_equal(second.encode(TEXTS), ov_encoder.encode(TEXTS))
    monkeypatch.setenv("MINILM_OPENVINO_CACHE_DIR", "")
    off = runtime.load(ov_dir, precision="fp32", backend="openvino")
    assert (off.info["cache_dir"], off.info["loaded_from_cache"]) == (None, False)
