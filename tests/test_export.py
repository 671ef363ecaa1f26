"""The export pipeline on a tiny random BERT: parity with PyTorch, graph contract, gates, atomic publish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.data import read_sts
from runtime.artifact import INPUT_NAMES, OUTPUT_NAME, Precision, read_manifest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

LONG_TEXTS = [" ".join(["the man is playing a guitar on the stage"] * k) for k in (15, 20, 25, 40)]  # 130-400 tokens


def _texts() -> list[str]:
    pairs = read_sts("dev")[:150]
    return [p.s1 for p in pairs] + [p.s2 for p in pairs] + LONG_TEXTS


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_long_texts_cover_129_to_256_tokens_and_truncation(tiny_artifact: Path) -> None:
    lengths = [len(ids) for ids in runtime.load(tiny_artifact, precision="fp32").tokenize(LONG_TEXTS)]
    assert lengths[0] > 128 and lengths[-1] == 256


def test_fp32_graph_matches_pytorch(tiny_artifact: Path, tiny_model) -> None:
    texts = _texts()
    reference = tiny_model.encode(texts, batch_size=16, convert_to_numpy=True)
    got = runtime.load(tiny_artifact, provider="cpu", precision="fp32").encode(texts, batch_size=16)
    assert _cosines(got, reference).min() >= 0.99999
    assert np.abs(got - reference).max() < 1e-4


def test_int8_graph_stays_close_to_pytorch(tiny_artifact: Path, tiny_model) -> None:
    texts = _texts()
    reference = tiny_model.encode(texts, batch_size=16, convert_to_numpy=True)
    got = runtime.load(tiny_artifact, provider="cpu", precision="int8").encode(texts, batch_size=16)
    assert _cosines(got, reference).min() >= 0.99


def test_fp16_graph_matches_pytorch_on_cpu(tiny_artifact: Path, tiny_model) -> None:
    texts = _texts()
    reference = tiny_model.encode(texts, batch_size=16, convert_to_numpy=True)
    got = runtime.load(tiny_artifact, provider="cpu", precision="fp16").encode(texts, batch_size=16)
    assert _cosines(got, reference).min() >= 0.999


@pytest.mark.parametrize("precision", list(Precision))
def test_graph_contract(tiny_artifact: Path, precision: Precision) -> None:
    graph = onnx.load(str(tiny_artifact / precision.file_name))
    inputs = {i.name: i.type.tensor_type for i in graph.graph.input}
    assert list(inputs) == list(INPUT_NAMES)
    for t in inputs.values():
        assert t.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in t.shape.dim] == ["batch_size", "sequence_length"]
    (out,) = graph.graph.output
    assert out.name == OUTPUT_NAME
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch_size"
    assert out.type.tensor_type.shape.dim[1].dim_value == 32


def test_fusions_are_recorded_and_present(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    fusions = manifest.variants[Precision.FP32].settings["fusions"]
    assert fusions.get("Attention") == 2 and fusions.get("BiasGelu") == 2 and "SkipLayerNormalization" not in fusions
    ops = {n.op_type for n in onnx.load(str(tiny_artifact / Precision.FP32.file_name)).graph.node}
    assert {"Attention", "BiasGelu", "LayerNormalization"} <= ops
    fp16_ops = {n.op_type for n in onnx.load(str(tiny_artifact / Precision.FP16.file_name)).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= fp16_ops, "the CUDA graph keeps the fused residual LayerNorm"


def test_int8_graph_has_every_dense_layer_quantized(tiny_artifact: Path) -> None:
    nodes = onnx.load(str(tiny_artifact / Precision.INT8.file_name)).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("MatMul") == 0, "no float MatMul left in the int8 graph"
    assert ops.count("MatMulIntegerToFloat") == 2 * 6  # 2 layers x (Q, K, V, attention out, FFN in, FFN out)
    assert read_manifest(tiny_artifact).variants[Precision.INT8].settings["quantized_matmuls"] == 12


def test_manifest_records_hashes_metrics_and_provenance(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    assert set(manifest.variants) == set(Precision)
    for variant in manifest.variants.values():
        assert {"min_cosine", "dev_spearman", "dev_pearson"} <= set(variant.metrics)
        runtime.artifact.verify(tiny_artifact, variant.graph)
    runtime.artifact.verify(tiny_artifact, manifest.tokenizer)
    prov = manifest.provenance
    assert set(prov["data"]) == {"train", "dev"} and prov["versions"]["onnxruntime"] != "absent"
    assert manifest.dimension == 32 and manifest.max_seq_length == 256


def test_written_tokenizer_has_no_fixed_padding(tiny_artifact: Path) -> None:
    data = json.loads((tiny_artifact / "tokenizer.json").read_text())
    assert data["padding"] is None
    assert data["truncation"]["max_length"] == 256


def test_variant_failing_its_gate_is_not_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    from export.pipeline import ExportOptions, run_export
    from export.validate import Gates

    out = tmp_path / "strict"
    gates = Gates(int8_max_spearman_drop=-1.0, fp16_min_cosine=0.0, fp16_max_spearman_drop=1.0)
    manifest = run_export(tiny_model_dir, out, ExportOptions(gates=gates, dev_pairs=read_sts("dev")[:40]))
    assert Precision.INT8 not in manifest.variants
    assert not (out / Precision.INT8.file_name).exists()
    assert Precision.INT8 not in read_manifest(out).variants


def test_failed_export_leaves_previous_artifact_intact(
    tiny_model_dir: Path, tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import export.pipeline as pipeline

    out = tmp_path / "good"
    shutil.copytree(tiny_artifact, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated quantisation crash")

    monkeypatch.setattr(pipeline, "quantize_int8", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        pipeline.run_export(tiny_model_dir, out, pipeline.ExportOptions(dev_pairs=read_sts("dev")[:20]))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["good"], "temporary folder cleaned up"


def test_base_model_with_wrong_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import export.train as train

    (tmp_path / "model.safetensors").write_bytes(b"not the official weights")
    fake = types.SimpleNamespace(get_model_path=lambda: tmp_path)
    monkeypatch.setattr(train, "require", lambda name: fake)
    with pytest.raises(ValueError, match="sha256"):
        train.base_model_dir()
