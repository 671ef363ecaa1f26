"""Reliability: fuzzed input, concurrency, and exports that are killed or fail midway."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from export.data import read_sts

# Vectors of one text in different batches agree to this (per-token int8 scales make the int8 graph
# batch-invariant up to float rounding inside attention; measured max |diff| about 1e-6).
BATCH_INVARIANCE_ATOL = 1e-5

any_char = st.characters(codec=None, categories=None)  # all of unicode, lone surrogates included
short_text = st.text(alphabet=any_char, max_size=300)
long_text = st.builds(
    lambda unit, n: (unit * n)[:100_000], st.text(alphabet=any_char, min_size=1, max_size=40), st.integers(1, 20_000)
)
texts = st.lists(st.one_of(short_text, short_text, short_text, long_text), min_size=1, max_size=6)


@pytest.mark.slow
@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # the same 1,000 cases on every run: a failure reproduces, and hypothesis prints it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=texts)
def test_fuzzed_batches_are_finite_unit_and_batch_invariant(encoder: runtime.Encoder, batch: list[str]) -> None:
    out = encoder.encode(batch, batch_size=4)
    assert out.shape == (len(batch), 384) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(batch):
        np.testing.assert_allclose(out[i], encoder.encode(text), atol=BATCH_INVARIANCE_ATOL)


@pytest.mark.slow
def test_eight_threads_by_500_encodes_match_serial_bit_for_bit(encoder: runtime.Encoder) -> None:
    pairs = read_sts("dev")[:500]
    work = [[p.s1] if i % 3 else [p.s1, p.s2] for i, p in enumerate(pairs)]
    serial = [encoder.encode(t) for t in work]
    mismatches: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            order = list(range(len(work)))[worker:] + list(range(len(work)))[:worker]  # threads out of phase
            for i in order:
                if not np.array_equal(encoder.encode(work[i]), serial[i]):
                    mismatches.append((worker, i))
        except BaseException as err:  # surfaced below: a thread's exception must fail the test
            errors.append(err)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not mismatches


def test_several_encoders_in_one_process(default_dir: Path, encoder: runtime.Encoder) -> None:
    others = [runtime.load(default_dir, threads=n, backend="onnxruntime") for n in (1, 2)]
    texts = [p.s1 for p in read_sts("dev")[:40]]
    want = encoder.encode(texts)
    encoders = [encoder, *others]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def run(i: int, enc: runtime.Encoder) -> None:
        try:
            results[i] = enc.encode(texts, batch_size=8)
        except BaseException as err:  # surfaced below: a thread's exception must fail the test
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, e)) for i, e in enumerate(encoders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(results) == list(range(len(encoders)))
    for got in results.values():
        np.testing.assert_allclose(got, want, atol=BATCH_INVARIANCE_ATOL)


def test_corrupt_tokenizer_with_matching_manifest_is_refused(damaged: Path) -> None:
    import json

    folder = damaged
    (folder / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    data = json.loads((folder / "manifest.json").read_text())
    entry = runtime.artifact.FileEntry.of(folder / "tokenizer.json")
    data["tokenizer"] = {"file": entry.file, "sha256": entry.sha256, "bytes": entry.bytes}
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(runtime.ArtifactError, match=r"tokenizer\.json: not a valid tokenizers file"):
        runtime.load(folder)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_export_killed_midway_leaves_previous_artifact(
    tiny_model_dir: Path, tiny_artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    shutil.copytree(tiny_artifact, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "export", "onnx", "--checkpoint", str(tiny_model_dir), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = tmp_path / f".model.tmp-{proc.pid}"
    deadline = time.monotonic() + 120
    while not (tmp / "model.fp32.onnx").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "export finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    from export.publish import recover_interrupted

    recover_interrupted(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "the dead export's temporary folder is removed"


def test_export_killed_mid_swap_is_restored(tiny_artifact: Path, tmp_path: Path) -> None:
    from export.publish import recover_interrupted

    out = tmp_path / "model"
    shutil.copytree(tiny_artifact, tmp_path / f".model.old-{_dead_pid()}")
    recover_interrupted(out)
    assert runtime.load(out, precision="fp32").encode("restored").shape == (32,)


def test_failing_fp32_gate_leaves_previous_artifact(tiny_model_dir: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    from export.pipeline import ExportOptions, run_export
    from export.validate import Gates

    out = tmp_path / "model"
    shutil.copytree(tiny_artifact, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    impossible = ExportOptions(gates=Gates(fp32_min_cosine=1.5), dev_pairs=read_sts("dev")[:20])
    with pytest.raises(RuntimeError, match="parity gate"):
        run_export(tiny_model_dir, out, impossible)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
