"""The shipped default artifact: integrity, accuracy, golden vectors; damaged copies are refused at load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.data import evaluate_pairs
from runtime.artifact import MANIFEST_FILE, Precision, read_manifest, verify

# First 8 dimensions of the shipped int8 model's embedding of each text (recorded at export; docs/accuracy.md).
GOLDEN_PATH = Path(__file__).with_name("golden.json")


def test_default_artifact_matches_its_manifest(default_dir: Path) -> None:
    manifest = read_manifest(default_dir)
    assert manifest.dimension == 384 and manifest.max_seq_length == 256
    verify(default_dir, manifest.tokenizer)
    verify(default_dir, manifest.variants[Precision.INT8].graph)


def test_default_artifact_reaches_stsb_dev_spearman(encoder: runtime.Encoder, dev_pairs) -> None:
    score = evaluate_pairs(lambda texts: encoder.encode(texts, batch_size=64), dev_pairs)
    assert score.spearman >= 0.893
    recorded = encoder.manifest.variants[Precision.INT8].metrics["dev_spearman"]
    assert abs(score.spearman - recorded) < 1e-4, "runtime reproduces the export's own measurement"


def test_golden_vectors(encoder: runtime.Encoder) -> None:
    golden = json.loads(GOLDEN_PATH.read_text())
    assert golden["graph_sha256"] == encoder.manifest.variants[Precision.INT8].graph.sha256, "regenerate golden.json"
    for text, dims in golden["vectors"].items():
        np.testing.assert_allclose(encoder.encode(text)[: len(dims)], dims, atol=1e-4)


def _int8(folder: Path) -> Path:
    return folder / Precision.INT8.file_name


def test_truncated_graph_is_refused(damaged: Path) -> None:
    data = _int8(damaged).read_bytes()
    _int8(damaged).write_bytes(data[: len(data) // 2])
    with pytest.raises(runtime.ArtifactError, match=r"model\.int8\.onnx: .* bytes, manifest says"):
        runtime.load(damaged)


def test_flipped_byte_is_refused(damaged: Path) -> None:
    data = bytearray(_int8(damaged).read_bytes())
    data[len(data) // 3] ^= 0xFF
    _int8(damaged).write_bytes(bytes(data))
    with pytest.raises(runtime.ArtifactError, match=r"model\.int8\.onnx: sha256 mismatch"):
        runtime.load(damaged)


def test_missing_tokenizer_is_refused(damaged: Path) -> None:
    (damaged / "tokenizer.json").unlink()
    with pytest.raises(runtime.ArtifactError, match=r"tokenizer\.json: file missing"):
        runtime.load(damaged)


def test_missing_manifest_is_refused(damaged: Path) -> None:
    (damaged / MANIFEST_FILE).unlink()
    with pytest.raises(runtime.ArtifactError, match=r"manifest\.json: manifest missing"):
        runtime.load(damaged)


def test_corrupt_manifest_is_refused(damaged: Path) -> None:
    (damaged / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(runtime.ArtifactError, match=r"manifest\.json: unreadable manifest"):
        runtime.load(damaged)


def test_manifest_missing_a_field_is_refused(damaged: Path) -> None:
    data = json.loads((damaged / MANIFEST_FILE).read_text())
    del data["tokenizer"]
    (damaged / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(runtime.ArtifactError, match=r"malformed manifest: KeyError: 'tokenizer'"):
        runtime.load(damaged)


def test_newer_format_version_is_refused(damaged: Path) -> None:
    data = json.loads((damaged / MANIFEST_FILE).read_text())
    data["format_version"] = 99
    (damaged / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(runtime.ArtifactError, match="format_version 99 is not supported"):
        runtime.load(damaged)


def test_missing_variant_is_named(damaged: Path) -> None:
    with pytest.raises(runtime.ArtifactError, match=r"model\.fp32\.onnx: fp32 graph not present"):
        runtime.load(damaged, precision="fp32")


def test_graph_with_wrong_output_shape_is_refused(damaged: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "sequence_length"])
    out = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch_size", 128])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 128], np.ones(128, np.float32))
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["m", "w"], ["sentence_embedding"]),
    ]
    graph = helper.make_graph(nodes, "wrong", [ids, mask], [out], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(_int8(damaged)))
    data = json.loads((damaged / MANIFEST_FILE).read_text())
    entry = runtime.artifact.FileEntry.of(_int8(damaged))
    data["variants"]["int8"]["graph"] = {"file": entry.file, "sha256": entry.sha256, "bytes": entry.bytes}
    (damaged / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(runtime.ArtifactError, match=r"model\.int8\.onnx: output 'sentence_embedding' .*\[batch, 384\]"):
        runtime.load(damaged)
