"""Token packing (export.pack) on the tiny model's int8 graph: same vectors bit for bit, GEMMs on real tokens only,
and an artifact that is only ever replaced by a graph that passed that check."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.data import read_sts
from runtime.artifact import Precision, read_manifest, sha256_file

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pack = pytest.importorskip("export.pack")


def _sentences() -> list[str]:
    pairs = read_sts("dev")[:120]
    return [p.s1 for p in pairs] + [p.s2 for p in pairs] + [" ".join(["a long passage"] * 90)]  # one past 256 tokens


@pytest.fixture(scope="module")
def packed(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("packed") / "tiny"
    shutil.copytree(tiny_artifact, folder)
    pack.pack_artifact(folder, _sentences())
    return folder


def _mixed_batches(ids: list[list[int]], seed: int = 3) -> list[list[list[int]]]:
    """Random batches of 1 to 24 rows of mixed lengths: almost every one pads, some by 10x."""
    rng = random.Random(seed)
    return [[ids[rng.randrange(len(ids))] for _ in range(rng.choice([1, 2, 5, 24]))] for _ in range(40)]


def test_packed_graph_gives_bit_identical_vectors(tiny_artifact: Path, packed: Path) -> None:
    plain = runtime.load(tiny_artifact, provider="cpu", precision="int8")
    packed_encoder = runtime.load(packed, provider="cpu", precision="int8")
    assert (plain.packs_tokens, packed_encoder.packs_tokens) == (False, True)
    assert packed_encoder.info["packed_tokens"] is True
    ids = plain.tokenize(_sentences())
    for rows in _mixed_batches(ids):
        a = plain.embed_ids(rows, normalize_embeddings=False)
        b = packed_encoder.embed_ids(rows, normalize_embeddings=False)
        assert np.array_equal(a, b), f"rows of lengths {[len(r) for r in rows]}"


def test_integer_gemms_see_only_the_real_tokens(packed: Path) -> None:
    """A packed graph that still multiplied padding would give the same vectors: look at a GEMM's rows instead."""
    manifest = read_manifest(packed)
    model = onnx.load(str(packed / manifest.variants[Precision.INT8].graph.file))
    gemms = [n.output[0] for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in gemms)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = runtime.load(packed, provider="cpu").tokenize(["a man plays the guitar on a stage at night", "hi", "a dog"])
    lengths = [len(r) for r in rows]
    width = max(lengths)
    ids = np.zeros((3, width), np.int64)
    mask = np.zeros((3, width), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    outputs = session.run(gemms, {"input_ids": ids, "attention_mask": mask})
    assert len(outputs) == len(gemms) > 0 and 3 * width > sum(lengths) + 1
    # every real token plus the one spare row the padding positions point at, never 3 x width
    assert {out.shape[0] for out in outputs} == {sum(lengths) + 1}


def test_packing_twice_is_refused(packed: Path) -> None:
    with pytest.raises(ValueError, match="packed already"):
        pack.pack_artifact(packed, _sentences()[:8])


def test_a_graph_that_changes_vectors_is_refused_and_the_artifact_kept(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_artifact, folder)
    graph = folder / read_manifest(folder).variants[Precision.INT8].graph.file
    before = (sha256_file(graph), (folder / "manifest.json").read_bytes())
    real = pack.pack_tokens

    def off_by_a_little(model: object) -> int:  # packs, then nudges one LayerNorm bias: vectors move slightly
        layers = real(model)
        bias = next(t for t in model.graph.initializer if t.name.endswith("LayerNorm.bias"))  # type: ignore[attr-defined]
        array = onnx.numpy_helper.to_array(bias) + np.float32(1e-3)
        bias.CopyFrom(onnx.numpy_helper.from_array(array, bias.name))
        return layers

    monkeypatch.setattr(pack, "pack_tokens", off_by_a_little)
    with pytest.raises(ValueError, match="packed graph differs"):
        pack.pack_artifact(folder, _sentences()[:40])
    assert (sha256_file(graph), (folder / "manifest.json").read_bytes()) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_artifact.iterdir())


def test_an_operator_that_is_not_row_wise_on_the_token_stream_is_refused(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    model = onnx.load(str(tiny_artifact / manifest.variants[Precision.INT8].graph.file))
    first_norm = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    reader = next(n for n in model.graph.node if first_norm.output[0] in n.input and n is not first_norm)
    transpose = onnx.helper.make_node("Identity", [first_norm.output[0]], ["copied"], name="copy")
    transpose.op_type = "Transpose"
    nodes = list(model.graph.node)
    nodes.insert(nodes.index(reader), transpose)
    reader.input[list(reader.input).index(first_norm.output[0])] = "copied"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with pytest.raises(ValueError, match="Transpose on the token stream"):
        pack.pack_tokens(model)
