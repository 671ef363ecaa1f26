"""The int8 graph gives the same vectors on every x86 instruction set: its integer products are exact everywhere.

Three layers of proof: the weights are bounded so that no kernel's int16 pair sum can saturate; on this CPU the int8
graph equals its exact-integer reference (export.reference); and under qemu the AVX2 (Haswell) and SSE4.1 (Nehalem)
kernels equal it too. The qemu tests also show that the harness can fail: a graph with full-range 8-bit weights does
saturate under Haswell, as onnxruntime issue #6004 describes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.artifact import Precision

onnx = pytest.importorskip("onnx")

from export.isa_check import LONG_TEXT, saturation_probe  # noqa: E402
from export.isa_check import run as isa_run  # noqa: E402
from export.quantize import WEIGHT_LEVELS, power_of_two  # noqa: E402
from export.reference import exact_reference, reference_artifact  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden.json")
INT16_MAX = 2**15 - 1
QEMU = shutil.which("qemu-x86_64")
QEMU_TIMEOUT = 900
QEMU_CPUS = ("Haswell", "Nehalem")  # AVX2 + FMA; SSE4.1 without FMA. QEMU emulates no AVX-512.


def _integer_weights(graph: Path) -> list[np.ndarray]:
    model = onnx.load(str(graph))
    inits = {t.name: t for t in model.graph.initializer}
    return [
        onnx.numpy_helper.to_array(inits[n.input[1]]) for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"
    ]


@pytest.fixture(scope="session")
def shipped_reference(default_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_artifact(default_dir, tmp_path_factory.mktemp("exact"))


def test_weights_keep_every_int16_pair_sum_in_range(default_dir: Path) -> None:
    weights = _integer_weights(default_dir / Precision.INT8.file_name)
    assert len(weights) == 36
    for w in weights:
        # vpmaddubsw adds two uint8 x int8 products; activations reach 255 (zero point 128 + 127)
        worst_pair = 255 * (np.abs(w[0::2].astype(np.int32)) + np.abs(w[1::2].astype(np.int32))).max()
        assert worst_pair <= INT16_MAX
        assert np.abs(w.astype(np.int32)).max() <= WEIGHT_LEVELS


def test_shipped_int8_equals_its_exact_reference_on_this_cpu(
    encoder: runtime.Encoder, shipped_reference: Path, dev_pairs
) -> None:
    texts = [p.s1 for p in dev_pairs[:100]] + [p.s2 for p in dev_pairs[:100]] + [LONG_TEXT]
    exact = runtime.load(shipped_reference, provider="cpu", precision="int8").encode(texts)
    np.testing.assert_allclose(encoder.encode(texts), exact, atol=1e-5, rtol=0)


def test_golden_vectors_come_from_the_exact_reference(shipped_reference: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    exact = runtime.load(shipped_reference, provider="cpu", precision="int8")
    for text, dims in golden["vectors"].items():
        np.testing.assert_allclose(exact.encode(text)[: len(dims)], dims, atol=2e-6)


def test_reference_refuses_a_graph_float32_cannot_hold_exactly(default_dir: Path, tmp_path: Path) -> None:
    model = onnx.load(str(default_dir / Precision.INT8.file_name))
    first = next(n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat")
    weight = next(t for t in model.graph.initializer if t.name == first.input[1])
    w = onnx.numpy_helper.to_array(weight)
    weight.CopyFrom(onnx.numpy_helper.from_array(np.full_like(w, 127), weight.name))  # full-range 8-bit weights
    onnx.save(model, str(tmp_path / "wide.onnx"))
    with pytest.raises(ValueError, match=r"may reach .* >= 2\^24"):
        exact_reference(tmp_path / "wide.onnx", tmp_path / "ref.onnx")


def test_smoothing_factors_survive_last_bit_noise_in_calibration() -> None:
    # The fp32 calibration pass differs between CPUs in its last bits; the factors must not.
    rng = np.random.default_rng(0)
    factors = np.exp(rng.uniform(-6, 6, 20_000)).astype(np.float32)
    noisy = factors * np.float32(1 + 1e-6)
    np.testing.assert_array_equal(power_of_two(factors), power_of_two(noisy))
    assert set(np.unique(np.log2(power_of_two(factors)) % 1)) == {0.0}


def _qemu_runs(reference: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """export.isa_check under each emulated CPU, concurrently (one Python start each: that dominates under qemu)."""
    if QEMU is None:
        if os.environ.get("REQUIRE_QEMU"):
            pytest.fail("qemu-x86_64 is required (REQUIRE_QEMU is set) but not installed: apt-get install qemu-user")
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user); CI sets REQUIRE_QEMU=1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {}
    for cpu in QEMU_CPUS:
        # Golden vectors must hold on AVX2 (a class CI lands on). SSE4.1 is held to the reference only: its float
        # kernels (no FMA) round differently from AVX2/AVX-512 in the non-integer operators.
        golden = ["--golden", str(GOLDEN)] if cpu == "Haswell" else []
        args = ["-m", "export.isa_check", "--reference", str(reference), "--texts", "12", "--label", cpu, *golden]
        command = [QEMU, "-cpu", cpu, sys.executable, *args]
        procs[cpu] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    results = {}
    for cpu, proc in procs.items():
        out, err = proc.communicate(timeout=QEMU_TIMEOUT)
        results[cpu] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def emulated(shipped_reference: Path) -> dict[str, dict[str, object]]:
    parsed = {}
    for cpu, done in _qemu_runs(shipped_reference).items():
        lines = done.stdout.strip().splitlines()
        assert lines, f"{cpu}: no output, exit {done.returncode}: {done.stderr[-2000:]}"
        parsed[cpu] = json.loads(lines[-1]) | {"exit": done.returncode}
    return parsed


@pytest.mark.parametrize("cpu", QEMU_CPUS)
def test_emulated_cpu_matches_the_exact_reference(cpu: str, emulated: dict[str, dict[str, object]]) -> None:
    result = emulated[cpu]
    assert result["max_abs_diff_to_exact"] <= 1e-5, result
    assert result["probe_error_7bit_weights"] == 0.0, result
    assert result["ok"] and result["exit"] == 0, result


def test_emulated_avx2_really_runs_the_saturating_kernel(emulated: dict[str, dict[str, object]]) -> None:
    # Without this the check above could pass because qemu never reached an int16 kernel at all.
    assert emulated["Haswell"]["probe_error_full_range_weights"] > 1000


def test_native_cpu_matches_the_exact_reference(shipped_reference: Path) -> None:
    assert saturation_probe(WEIGHT_LEVELS) == 0.0
    result = isa_run(runtime.artifact.default_artifact_dir(), shipped_reference, 12, 1e-5, GOLDEN)
    assert result["ok"], result
