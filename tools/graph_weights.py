"""The fine-tuned BERT's fp16 weights read back out of the fp16 graph, so the GPU run's PyTorch fp16 baseline need not
carry its own 43 MB copy of the same numbers.

The fp16 graph holds every weight of the encoder, rounded to fp16 as ``model.half()`` rounds them, but rearranged by
the fusions: each dense weight transposed into a MatMul, Q, K and V concatenated into one Attention weight, biases and
LayerNorm parameters moved into SkipLayerNormalization and BiasGelu. This module walks each layer's chain (Attention
-> MatMul -> SkipLayerNormalization -> MatMul -> BiasGelu -> MatMul -> SkipLayerNormalization) and undoes that. Whatever
the graph lacks (the pooler, unused by mean pooling) travels beside it, and so do the few elements the fp16 converter
rounded differently from torch (it clamps magnitudes below 6e-8 to the smallest subnormal where torch rounds to 0):
:func:`remainder` computes both, :func:`rebuild` puts them back, and :func:`digest` lets both ends check that the
rebuilt weights are bit for bit ``model.half()`` of the checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def weights_from_graph(graph: Path) -> dict[str, np.ndarray]:
    """BERT state-dict tensors (checkpoint names, fp16) recovered from the fused fp16 graph.

    Layer k is the chain that starts at the k-th Attention node, and each tensor is found by its place in that chain,
    not by its initializer's name: the optimizer merges initializers with equal values under one name.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = list(model.graph.node)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def next_op(node: onnx.NodeProto, op: str) -> onnx.NodeProto:
        found = [n for n in users.get(node.output[0], []) if n.op_type == op]
        if len(found) != 1:
            raise ValueError(f"{graph}: {node.op_type} {node.name!r} does not feed exactly one {op}")
        return found[0]

    def constant(name: str) -> np.ndarray:
        if name not in inits:
            raise ValueError(f"{graph}: {name!r} is not a constant")
        return inits[name]

    weights: dict[str, np.ndarray] = {}
    (norm,) = [n for n in nodes if n.op_type == "LayerNormalization"]  # the embeddings' (the rest are fused)
    embeddings = {"word_embeddings", "position_embeddings", "token_type_embeddings"}
    for name in embeddings:
        weights[f"embeddings.{name}.weight"] = constant(f"bert.embeddings.{name}.weight")
    weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"] = map(constant, norm.input[1:3])
    for k, attention in enumerate(n for n in nodes if n.op_type == "Attention"):
        layer = f"encoder.layer.{k}"
        qkv_w, qkv_b = constant(attention.input[1]), constant(attention.input[2])
        width = qkv_w.shape[1] // 3
        for i, name in enumerate(("query", "key", "value")):
            weights[f"{layer}.attention.self.{name}.weight"] = qkv_w[:, i * width : (i + 1) * width].T
            weights[f"{layer}.attention.self.{name}.bias"] = qkv_b[i * width : (i + 1) * width]
        dense = next_op(attention, "MatMul")
        norm1 = next_op(dense, "SkipLayerNormalization")
        intermediate = next_op(norm1, "MatMul")
        gelu = next_op(intermediate, "BiasGelu")
        output = next_op(gelu, "MatMul")
        norm2 = next_op(output, "SkipLayerNormalization")
        for part, matmul, skip_norm in (("attention.output", dense, norm1), ("output", output, norm2)):
            weights[f"{layer}.{part}.dense.weight"] = constant(matmul.input[1]).T
            weights[f"{layer}.{part}.dense.bias"] = constant(skip_norm.input[4])
            weights[f"{layer}.{part}.LayerNorm.weight"] = constant(skip_norm.input[2])
            weights[f"{layer}.{part}.LayerNorm.bias"] = constant(skip_norm.input[3])
        weights[f"{layer}.intermediate.dense.weight"] = constant(intermediate.input[1]).T
        weights[f"{layer}.intermediate.dense.bias"] = constant(gelu.input[1])
    return {k: np.ascontiguousarray(v) for k, v in weights.items()}


def digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        value = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{value.dtype.str}|{value.shape}\n".encode())
        h.update(value.tobytes())
    return h.hexdigest()


PATCH = "patch::"
WEIGHTS_FILE = "model.safetensors"


def remainder(half: dict[str, np.ndarray], graph: Path) -> dict[str, np.ndarray]:
    """What ``half`` (the checkpoint's state dict in fp16) holds beyond the graph: tensors the graph lacks, whole, and
    for the others the elements that differ (``patch::<name>::index`` / ``::value``)."""
    recovered = weights_from_graph(graph)
    extra: dict[str, np.ndarray] = {}
    for name, value in half.items():
        if name not in recovered:
            extra[name] = value
            continue
        if recovered[name].shape != value.shape or recovered[name].dtype != value.dtype:
            raise ValueError(
                f"{graph}: {name} is {recovered[name].dtype} {recovered[name].shape} in the graph, "
                f"{value.dtype} {value.shape} in the checkpoint"
            )
        differ = np.flatnonzero(recovered[name].view(np.uint16).ravel() != value.view(np.uint16).ravel())
        if differ.size:
            extra[f"{PATCH}{name}::index"] = differ.astype(np.int64)
            extra[f"{PATCH}{name}::value"] = value.ravel()[differ]
    unknown = set(recovered) - set(half)
    if unknown:
        raise ValueError(f"{graph}: tensors {sorted(unknown)} are not in the checkpoint")
    return extra


def rebuild(graph: Path, extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint's fp16 state dict from the graph and :func:`remainder`'s output."""
    tensors = weights_from_graph(graph)
    for name, value in extra.items():
        if not name.startswith(PATCH):
            tensors[name] = value
    for name, index in extra.items():
        if name.startswith(PATCH) and name.endswith("::index"):
            target = name[len(PATCH) : -len("::index")]
            flat = tensors[target].ravel().copy()
            flat[index] = extra[f"{PATCH}{target}::value"]
            tensors[target] = flat.reshape(tensors[target].shape)
    return tensors


def main(argv: list[str] | None = None) -> None:
    """``python -m tools.graph_weights GRAPH REMAINDER OUT [--digest HEX]``: write the rebuilt safetensors."""
    import argparse

    from safetensors.numpy import load_file, save_file

    parser = argparse.ArgumentParser(prog="python -m tools.graph_weights", description=main.__doc__)
    parser.add_argument("graph", type=Path)
    parser.add_argument("remainder", type=Path, help="safetensors written from remainder()")
    parser.add_argument("out", type=Path, help="model.safetensors to write")
    parser.add_argument("--digest", help="expected digest(): refuse to write anything else")
    args = parser.parse_args(argv)
    tensors = rebuild(args.graph, load_file(str(args.remainder)))
    got = digest(tensors)
    if args.digest and got != args.digest:
        raise SystemExit(f"rebuilt weights have digest {got}, expected {args.digest}: not the checkpoint's")
    save_file(tensors, str(args.out))
    print(f"{args.out}: {len(tensors)} tensors, digest {got}")


if __name__ == "__main__":
    main()
