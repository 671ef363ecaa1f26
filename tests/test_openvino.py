"""backend="auto"'s rule, the OpenVINO form of a graph (runtime.openvino_form) and the OpenVINO backend."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.artifact import Precision, read_manifest
from runtime.backends import AUTO_OPENVINO_FROM, Backend, Decision, LengthRouter, decide, openvino_precision
from runtime.cpu import isa_class
from runtime.install import OPENVINO_INSTALL
from runtime.session import Provider

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "A man is playing a guitar.",
    "",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Une phrase en français, avec des accents.",
    "short",
    "word " * 300,  # truncated to max_seq_length: a full-length row, no padding (where bf16 once gave NaN)
]
AMX = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
ZEN4 = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16")
AVX2 = ("avx2", "fma")


@pytest.fixture(scope="module", autouse=True)
def openvino_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """OpenVINO's caches in a folder of this module's own, never the user's ~/.cache: forms and blobs that other runs
    (or other checkouts) left there must not decide what these tests load."""
    folder = tmp_path_factory.mktemp("openvino-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINILM_OPENVINO_CACHE_DIR", str(folder))
        yield folder


# ---- the rule: no openvino needed ----


@pytest.fixture()
def openvino_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runtime.backends.openvino_installed", lambda: True)
    monkeypatch.setattr("runtime.backends.platform.machine", lambda: "x86_64")
    monkeypatch.delenv("MINILM_OPENVINO_INFERENCE_PRECISION", raising=False)


def _decide(folder: Path, flags: tuple[str, ...], **kwargs: object) -> Decision:
    request = {"provider": Provider.CPU, "precision": None, "backend": Backend.AUTO, **kwargs}
    return decide(read_manifest(folder), folder, flags=flags, **request)  # type: ignore[arg-type]


def test_auto_uses_openvino_from_the_measured_length_on_amx(default_dir: Path, openvino_present: None) -> None:
    decision = _decide(default_dir, AMX)
    assert decision.openvino_from == AUTO_OPENVINO_FROM["amx"]
    assert decision.openvino_precision == "bf16"
    assert not decision.portable
    assert "CPU class amx" in decision.reasons[-1]
    threshold = AUTO_OPENVINO_FROM["amx"]
    assert decision.rule == (
        f"onnxruntime int8 below {threshold} tokens, openvino bf16 (OpenVINO form v1 of the int8 graph) "
        f"from {threshold} tokens"
    )
    assert decision.backend == "onnxruntime+openvino"


@pytest.mark.parametrize(
    ("flags", "cpu_class", "why"),
    [
        (ZEN4, "avx512vnni", "no OpenVINO rule measured for CPU class avx512vnni"),
        (AVX2, "avx2", "OpenVINO measured slower at every text length on CPU class avx2"),
    ],
)
def test_auto_keeps_onnxruntime_where_openvino_is_unmeasured_or_slower(
    default_dir: Path, openvino_present: None, flags: tuple[str, ...], cpu_class: str, why: str
) -> None:
    decision = _decide(default_dir, flags)
    assert (decision.backend, decision.openvino_from, decision.portable) == ("onnxruntime", None, True)
    assert decision.rule == "onnxruntime int8, every text"
    assert why in decision.reasons[-1] and isa_class(flags) == cpu_class


def test_auto_without_the_extra_uses_onnxruntime_and_says_why(
    default_dir: Path, openvino_present: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.backends.openvino_installed", lambda: False)
    decision = _decide(default_dir, AMX)
    assert decision.backend == "onnxruntime"
    assert OPENVINO_INSTALL in decision.reasons[-1]


def test_explicit_backends_are_honoured_on_every_class(default_dir: Path, openvino_present: None) -> None:
    assert _decide(default_dir, AMX, backend=Backend.ONNXRUNTIME).openvino_from is None
    for flags, precision in ((AMX, "bf16"), (ZEN4, "bf16"), (AVX2, "f32")):
        decision = _decide(default_dir, flags, backend=Backend.OPENVINO)
        assert (decision.backend, decision.openvino_from, decision.openvino_precision) == ("openvino", 1, precision)
        assert decision.rule == f"openvino {precision} (OpenVINO form v1 of the int8 graph), every text"


def test_the_precision_variable_overrides_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", "f32")
    assert openvino_precision(AMX) == "f32"
    monkeypatch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", "BF16")
    assert openvino_precision(AVX2) == "bf16"
    monkeypatch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", "fp8")
    with pytest.raises(ValueError, match="MINILM_OPENVINO_INFERENCE_PRECISION must be one of"):
        openvino_precision(AMX)


def test_a_rule_from_a_length_reads_as_two_engines() -> None:
    decision = Decision("cpu", Precision.INT8, openvino_from=48, openvino_precision="bf16")
    assert decision.backend == "onnxruntime+openvino"
    assert decision.rule == (
        "onnxruntime int8 below 48 tokens, openvino bf16 (OpenVINO form v1 of the int8 graph) from 48 tokens"
    )


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
    default_dir: Path, openvino_present: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("runtime.backends.isa_flags", lambda: AMX)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with caplog.at_level(logging.WARNING, logger="runtime.encoder"):
        encoder = runtime.load(default_dir, provider="cpu")
    assert (encoder.backend, encoder.rule) == ("onnxruntime", "onnxruntime int8, every text")
    assert "OpenVINO unusable" in caplog.text
    assert "OpenVINO failed" in encoder.info["reasons"][-1]  # type: ignore[index]


def test_onnxruntime_info(default_dir: Path) -> None:
    info = runtime.load(default_dir, provider="cpu", backend="onnxruntime").info
    assert (info["backend"], info["device"], info["graph_precision"], info["inference_precision"]) == (
        "onnxruntime",
        "cpu",
        "int8",
        "f32",
    )
    assert (info["portable"], info["rule"]) == (True, "onnxruntime int8, every text")
    assert info["reasons"][-1] == "backend='onnxruntime' asked for"  # type: ignore[index]


class _Fake:
    """A runner that records the padded shapes it was given and returns each row's token count as its vector."""

    equal_lengths = False
    cuts: tuple[int, ...] = ()

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.shapes.append(input_ids.shape)
        return np.repeat(attention_mask.sum(axis=1, keepdims=True).astype(np.float32), 3, axis=1)

    def info(self) -> dict[str, object]:
        return {}

    def tokens_per_run(self, width: int) -> int | None:
        return None


def test_length_router_sends_each_row_to_its_engine_unpadded_by_the_other() -> None:
    short, long = _Fake(), _Fake()
    router = LengthRouter(short, long, cut=4)
    lengths = [6, 2, 4, 3, 9]
    mask = np.array([[1] * n + [0] * (9 - n) for n in lengths], dtype=np.int64)
    out = router.run(mask * 7, mask)
    np.testing.assert_array_equal(out[:, 0], lengths)  # each row's own result, in input order
    assert (short.shapes, long.shapes) == ([(2, 3)], [(3, 9)])  # short rows cut to their own longest, 3 tokens
    router.run(mask[:1], mask[:1])
    assert long.shapes[-1] == (1, 9) and len(short.shapes) == 1  # all long: one call, the batch as given


# ---- the OpenVINO form ----


@pytest.fixture(scope="module")
def onnx_module():  # type: ignore[no-untyped-def]
    return pytest.importorskip("onnx")


def test_form_of_the_shipped_graph_is_plain_float_and_deterministic(default_dir: Path, onnx_module) -> None:
    from runtime.openvino_form import openvino_form, summary

    graph = default_dir / "model.int8.onnx"
    first = openvino_form(onnx_module.load(str(graph)))
    ops = summary(first)
    for gone in ("MatMulIntegerToFloat", "QuantizeLinear", "MultiHeadAttention", "Abs", "ReduceMax"):
        assert gone not in ops, (gone, ops)
    assert ops["MatMul"] == 36 + 2 * 6 and ops["Softmax"] == 6
    assert first.SerializeToString() == openvino_form(onnx_module.load(str(graph))).SerializeToString()


def test_form_keeps_the_int8_graph_computation_without_activation_rounding(tiny_artifact: Path, onnx_module) -> None:
    """Run with onnxruntime in float32, the form of the tiny int8 graph is the int8 model without its per-token
    activation rounding: closer to the fp32 graph than the int8 graph itself, and within weight-rounding distance."""
    import onnxruntime as ort

    from runtime.openvino_form import openvino_form

    form = openvino_form(onnx_module.load(str(tiny_artifact / "model.int8.onnx"))).SerializeToString()
    session = ort.InferenceSession(form, providers=["CPUExecutionProvider"])
    fp32 = runtime.load(tiny_artifact, precision="fp32", backend="onnxruntime")
    int8 = runtime.load(tiny_artifact, precision="int8", backend="onnxruntime")
    texts = [t for t in TEXTS if t] + ["a b c d e f g h"] * 3
    ids = fp32.tokenize(texts)
    width = max(map(len, ids))
    input_ids = np.array([r + [0] * (width - len(r)) for r in ids], dtype=np.int64)
    mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in ids], dtype=np.int64)
    (got,) = session.run(["sentence_embedding"], {"input_ids": input_ids, "attention_mask": mask})
    reference = fp32.encode(texts)
    err_form = np.abs(got - reference).max()
    err_int8 = np.abs(int8.encode(texts) - reference).max()
    assert err_form < err_int8, (err_form, err_int8)
    assert (got * reference).sum(axis=1).min() > 0.999


# ---- the OpenVINO backend, on the tiny model ----


@pytest.fixture(scope="module")
def ov_dir(tiny_artifact: Path) -> Path:
    pytest.importorskip("openvino")
    return tiny_artifact


@pytest.fixture(scope="module")
def ov_encoder(ov_dir: Path) -> runtime.Encoder:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", "f32")
        return runtime.load(ov_dir, precision="int8", backend="openvino")


def test_openvino_info_reports_what_it_compiled(ov_encoder: runtime.Encoder) -> None:
    info = ov_encoder.info
    assert (info["backend"], info["device"], info["graph_precision"]) == ("openvino", "cpu", "int8")
    assert info["inference_precision"] == "f32"  # what the variable asked for, read back from the compiled model
    assert info["config"]["NUM_STREAMS"] == 1  # type: ignore[index]
    assert info["graph_form"] == "OpenVINO form v1 (runtime.openvino_form)"
    assert info["portable"] is False


def test_openvino_f32_runs_the_form_as_onnxruntime_does(ov_dir: Path, ov_encoder: runtime.Encoder, onnx_module):
    """OpenVINO's conversion of the form (standard-op attention, the mask bias, dequantised weights) computes what
    onnxruntime computes on the same form."""
    import onnxruntime as ort

    from runtime.openvino_form import openvino_form

    form = openvino_form(onnx_module.load(str(ov_dir / "model.int8.onnx"))).SerializeToString()
    session = ort.InferenceSession(form, providers=["CPUExecutionProvider"])
    texts = [t for t in TEXTS if t]
    ids = ov_encoder.tokenize(texts)
    for rows in ([r] for r in ids):  # one text per run: no padding, the plain computation
        input_ids = np.array(rows, dtype=np.int64)
        (want,) = session.run(["sentence_embedding"], {"input_ids": input_ids, "attention_mask": input_ids * 0 + 1})
        np.testing.assert_allclose(ov_encoder.embed_ids(rows), want, atol=1e-4, rtol=0)


def test_openvino_text_alone_equals_text_in_padded_batches(ov_encoder: runtime.Encoder, dev_pairs: list) -> None:
    texts = [p.s1 for p in dev_pairs[:300]]
    alone = np.stack([ov_encoder.encode(t) for t in texts])
    for batch_size in (7, 32):
        np.testing.assert_allclose(ov_encoder.encode(texts, batch_size=batch_size), alone, atol=1e-4, rtol=0)
    ids = ov_encoder.tokenize(texts[:40])
    np.testing.assert_allclose(ov_encoder.embed_ids(ids), alone[:40], atol=1e-4, rtol=0)


def test_openvino_runs_are_planned_with_its_own_token_bound(ov_encoder: runtime.Encoder) -> None:
    ids = ov_encoder.tokenize(["word " * 300] * 20)  # 20 rows of 256 tokens: 16 per 4,096-token run, not 4
    assert [len(run) for run in ov_encoder.batch_plan(ids)] == [16, 4]


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
    assert sorted(results) == list(range(8))
    for i, got in results.items():
        np.testing.assert_array_equal(got, np.roll(want, -i, axis=0))


def test_bf16_vectors_are_finite_and_close(ov_dir: Path, ov_encoder: runtime.Encoder, monkeypatch) -> None:
    """bf16 on a CPU that has it, for the int8 and the fp32 graph, full-length rows included: finite vectors close
    to f32 inference's (CI on an AMX Xeon once saw NaN here: an f32 blob from OpenVINO's cache run as bf16)."""
    from runtime.cpu import isa_flags

    if not {"avx512_bf16", "amx_bf16"} & set(isa_flags()):
        pytest.skip("this CPU has no bf16 instructions")
    monkeypatch.delenv("MINILM_OPENVINO_INFERENCE_PRECISION", raising=False)
    for precision in ("int8", "fp32"):
        bf16 = runtime.load(ov_dir, precision=precision, backend="openvino")
        assert bf16.info["inference_precision"] == "bf16"
        got = bf16.encode(TEXTS)
        assert np.isfinite(got).all()
        f32 = ov_encoder.encode(TEXTS)
        assert not np.array_equal(got, f32) and (got * f32).sum(axis=1).min() > 0.99


def test_compiled_model_cache(ov_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The first load writes the form and OpenVINO's compiled blob to the cache folder, the next one imports the
    blob and gives the same vectors; an empty MINILM_OPENVINO_CACHE_DIR writes nothing. Each inference precision has
    a blob of its own: OpenVINO 2026.4 handed an f32 blob to a bf16 request (keyed by the model file alone), and its
    vectors were NaN and zeros."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINILM_OPENVINO_CACHE_DIR", str(cache))
    from runtime.cpu import isa_flags

    vectors = {}
    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(isa_flags()))
    for precision in ("f32", "bf16", "f32", "bf16") if bf16 else ("f32", "f32"):
        monkeypatch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", precision)
        encoder = runtime.load(ov_dir, precision="int8", backend="openvino")
        assert encoder.info["inference_precision"] == precision
        assert encoder.info["cache_dir"] == str(cache / precision)
        assert encoder.info["loaded_from_cache"] is (precision in vectors)
        got = encoder.encode(TEXTS)
        assert np.isfinite(got).all()
        if precision in vectors:
            np.testing.assert_array_equal(got, vectors[precision])
        vectors[precision] = got
    assert sorted(p.suffix for p in (cache / "f32").iterdir()) == [".blob", ".onnx"]
    if bf16:
        assert (vectors["f32"] * vectors["bf16"]).sum(axis=1).min() > 0.99
    monkeypatch.setenv("MINILM_OPENVINO_CACHE_DIR", "")
    off = runtime.load(ov_dir, precision="int8", backend="openvino")
    assert (off.info["cache_dir"], off.info["loaded_from_cache"]) == (None, False)
    np.testing.assert_array_equal(off.encode(TEXTS), vectors[off.info["inference_precision"]])  # type: ignore[index]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a process allowed on 2+ CPUs")
def test_openvino_stays_on_the_process_cpus(ov_dir: Path) -> None:
    """Held to one CPU, OpenVINO uses one thread, and no thread it starts may run elsewhere."""
    cpu = min(os.sched_getaffinity(0))
    probe = f"""
import json, os, sys
os.sched_setaffinity(0, {{{cpu}}})
import runtime
enc = runtime.load(sys.argv[1], precision="int8", backend="openvino")
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


def test_cli_backend_option(ov_dir: Path, ov_encoder: runtime.Encoder, tmp_path: Path, monkeypatch) -> None:
    from runtime.__main__ import main

    monkeypatch.setenv("MINILM_OPENVINO_INFERENCE_PRECISION", "f32")
    source = tmp_path / "in.txt"
    source.write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    model = ["--model", str(ov_dir), "--precision", "int8"]
    main(["--backend", "openvino", *model, "encode", str(source), "-o", str(out), "-q"])
    np.testing.assert_allclose(np.load(out), ov_encoder.encode([t for t in TEXTS if t]), atol=1e-6)
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


# ---- the shipped model: the gates of every path auto may pick (the full environment has openvino) ----


@pytest.fixture(scope="module")
def shipped_openvino(default_dir: Path) -> runtime.Encoder:
    pytest.importorskip("openvino")
    return runtime.load(default_dir, backend="openvino")


@pytest.mark.slow
def test_shipped_openvino_path_passes_the_gates(
    shipped_openvino: runtime.Encoder, encoder: runtime.Encoder, dev_pairs: list
) -> None:
    """On STS-B dev: spearman within 0.001 of the fp32 reference the manifest records, every vector within cosine
    0.99 of onnxruntime int8's, and a text alone vs padded in a batch of 32 within the bf16 gate (cosine >= 0.9999,
    max abs <= 2e-3; float32 inference: 1e-4)."""
    from export.data import gold_scores, score_stacked

    texts = [p.s1 for p in dev_pairs] + [p.s2 for p in dev_pairs]
    got = shipped_openvino.encode(texts)
    score = score_stacked(got, gold_scores(dev_pairs))
    reference = shipped_openvino.manifest.provenance["pytorch_reference"]["dev_spearman"]
    assert abs(score.spearman - reference) <= 1e-3, (score.spearman, reference)
    assert (got * encoder.encode(texts)).sum(axis=1).min() >= 0.99
    sample = texts[::25]
    alone = np.stack([shipped_openvino.encode(t) for t in sample])
    batched = shipped_openvino.encode(sample, batch_size=32)
    bf16 = shipped_openvino.info["inference_precision"] == "bf16"
    assert (alone * batched).sum(axis=1).min() >= (0.9999 if bf16 else 1 - 1e-7)
    assert np.abs(alone - batched).max() <= (2e-3 if bf16 else 1e-4)
