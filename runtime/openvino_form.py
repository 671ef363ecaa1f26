"""The OpenVINO form of an artifact graph: the same model, rewritten into operators OpenVINO's CPU plugin runs well.

The int8 graph quantises each dense layer's input per token (``QuantizeLinear`` with one block per row) and
multiplies integers (``MatMulIntegerToFloat``). OpenVINO cannot convert the blocked ``QuantizeLinear`` and has no
use for the per-token chain: in its form each ::

    x' = x * inv_smooth                      (GELU sites: x' = (x + 0.17) * inv_smooth)
    y  = MatMulIntegerToFloat(QuantizeLinear(x', max|x'| / 127), W_q, max|x'|, col_scale / 127)

becomes ``y = x @ W`` with the shipped int8 weights dequantised, ``W = inv_smooth * W_q * col_scale`` (the
smoothing folded into the rows; a GELU site's shift folded into the bias that follows: ``(x + c) @ W = x @ W +
c * sum(W)``). The weights are exactly the shipped int8 ones; only the activations are no longer rounded to 8 bits,
so the vectors are the model's, not bit-identical with onnxruntime int8's.

Attention (``com.microsoft`` MultiHeadAttention, or Attention in float graphs) becomes standard operators ::

    softmax(Q Kᵀ / sqrt(d) + (1 - mask) * -10000) V

the pattern OpenVINO fuses into its own attention kernel (measured as fast as, or faster than, its conversion of the
contrib operator), with a mask bias every float format holds finitely (the exporter's ``mask_filter_value``,
float32's lowest, is -inf in bf16).

The rewrite is a pure function of the graph's bytes: the same graph always gives the same form (see :data:`VERSION`).
``onnx`` is imported here, so only by the ``openvino`` extra's users.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

# Bump when the rewrite changes what it produces: cached forms and compiled blobs are keyed by it.
VERSION = 1
# The additive mask for padded keys: exp(-10000 + s) is 0 in every float format for any attention score s a
# trained BERT produces, and -10000 is finite in bf16 and fp16, unlike float32's lowest.
MASK_BIAS = -10000.0
CONTRIB = "com.microsoft"


def openvino_form(model: Any) -> Any:
    """Rewrite an artifact's ONNX graph (an ``onnx.ModelProto``, changed in place and returned)."""
    graph = model.graph
    _dequantise_matmuls(graph)
    _standard_attention(graph)
    _prune(graph)
    return model


def summary(model: Any) -> dict[str, int]:
    """Operator counts of a graph, for ``Encoder.info`` and tests."""
    return dict(Counter(n.op_type for n in model.graph.node))


# ---- dense layers ------------------------------------------------------------------------------------------------


def _dequantise_matmuls(graph: Any) -> None:
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    array = _arrays(inits)
    replacements: dict[str, list[Any]] = {}
    new_inits: list[Any] = []
    bias_shift: dict[str, np.ndarray] = {}  # MatMul output -> what folding a GELU shift adds to it
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat" or node.domain != CONTRIB:
            continue
        q, w_q, _a_scale, b_scale = node.input[:4]
        quantize = producer.get(q)
        if quantize is None or quantize.op_type != "QuantizeLinear":
            raise ValueError(f"{node.name}: its input {q!r} is not made by QuantizeLinear")
        x = quantize.input[0]
        # MatMulIntegerToFloat: (q - zero point) @ W_q * a_scale * b_scale, where q - zero point = x / a_scale * 127
        weights = array(w_q).astype(np.float64) * (array(b_scale).astype(np.float64) * 127.0)
        source, scale, shift = _fold_prologue(x, producer, readers, inits, array)
        if scale is not None:
            weights = scale.astype(np.float64)[:, None] * weights
        if shift is not None:
            bias_shift[node.output[0]] = shift * weights.sum(axis=0)
        name = f"{w_q}_dequantised"
        new_inits.append(numpy_helper.from_array(weights.astype(np.float32), name))
        replacements[node.output[0]] = [helper.make_node("MatMul", [source, name], [node.output[0]], name=node.name)]
    if not replacements:
        return
    graph.initializer.extend(new_inits)
    nodes = []
    for node in graph.node:
        nodes.extend(replacements.get(node.output[0], [node]) if node.op_type == "MatMulIntegerToFloat" else [node])
    _fold_shifts_into_biases(graph, nodes, bias_shift)
    del graph.node[:]
    graph.node.extend(nodes)


def _fold_prologue(
    x: str, producer: dict[str, Any], readers: dict[str, list[Any]], inits: dict[str, Any], array: Any
) -> tuple[str, np.ndarray | None, float | None]:
    """The tensor a layer can read instead of its quantiser's input ``x``, with the per-channel factor and the scalar
    shift folded out of it: ``x = (source + shift) * scale``. A node is folded only when nothing but the quantisation
    chain (which disappears) and the node folded after it read its output."""
    scale = shift = None
    source = x
    folded: list[Any] = []
    node = producer.get(source)
    if node is not None and node.op_type == "Mul" and node.input[1] in inits and _read_only_by(source, readers, []):
        factor = array(node.input[1])
        if factor.ndim == 1:
            scale, source = factor, node.input[0]
            folded.append(node)
            node = producer.get(source)
    if (
        node is not None
        and node.op_type == "Add"
        and node.input[1] in inits
        and array(node.input[1]).size == 1
        and _read_only_by(source, readers, folded)
    ):
        shift, source = float(array(node.input[1]).reshape(())), node.input[0]
    return source, scale, shift


def _read_only_by(tensor: str, readers: dict[str, list[Any]], folded: list[Any]) -> bool:
    """Whether every reader of ``tensor`` is a quantisation-chain operator or one of the ``folded`` nodes."""
    return all(r.op_type in _QUANTISATION or any(r is f for f in folded) for r in readers.get(tensor, []))


# The per-token quantisation chain's operators: dead once its MatMulIntegerToFloat is gone.
_QUANTISATION = {"Abs", "ReduceMax", "Max", "QuantizeLinear"}


def _fold_shifts_into_biases(graph: Any, nodes: list[Any], shifts: dict[str, np.ndarray]) -> None:
    """Add each folded shift's ``c * sum(W)`` to the bias Add after its MatMul, or to a new Add where none is."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    for output, extra in shifts.items():
        adds = [n for n in nodes if n.op_type == "Add" and output in n.input]
        slot = None
        if len(adds) == 1:
            slot = next(
                (k for k, i in enumerate(adds[0].input) if i in inits and tuple(inits[i].dims) == extra.shape), None
            )
        if slot is not None:
            add = adds[0]
            bias = numpy_helper.to_array(inits[add.input[slot]]).astype(np.float64) + extra
            name = f"{add.input[slot]}_with_shift"
            graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), name))
            add.input[slot] = name
            continue
        index = next(k for k, n in enumerate(nodes) if output in n.output)
        raw = f"{output}_before_shift"
        nodes[index].output[0] = raw
        graph.initializer.append(numpy_helper.from_array(extra.astype(np.float32), f"{output}_shift"))
        nodes.insert(index + 1, helper.make_node("Add", [raw, f"{output}_shift"], [output], name=f"{output}_shift"))


# ---- attention ---------------------------------------------------------------------------------------------------


def _standard_attention(graph: Any) -> None:
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    array = _arrays(inits)
    nodes: list[Any] = []
    shared: dict[str, np.ndarray] = {
        "ovform_one": np.array(1.0, np.float32),
        "ovform_mask_bias_value": np.array(MASK_BIAS, np.float32),
        "ovform_mask_axes": np.array([1, 2], np.int64),
        "ovform_merge_heads": np.array([0, 0, -1], np.int64),
    }
    mask_nodes = [
        helper.make_node("Cast", ["attention_mask"], ["ovform_mask"], name="ovform_mask", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["ovform_one", "ovform_mask"], ["ovform_padding"], name="ovform_padding"),
        helper.make_node("Mul", ["ovform_padding", "ovform_mask_bias_value"], ["ovform_bias2d"], name="ovform_bias"),
        helper.make_node("Unsqueeze", ["ovform_bias2d", "ovform_mask_axes"], ["ovform_mask_bias"], name="ovform_mb"),
    ]
    new_inits: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.domain != CONTRIB or node.op_type not in ("MultiHeadAttention", "Attention"):
            nodes.append(node)
            continue
        if mask_nodes:
            nodes += mask_nodes
            new_inits.update(shared)
            mask_nodes = []
        heads = _attribute(node, "num_heads")
        p = _safe(node.name or node.output[0])
        if node.op_type == "MultiHeadAttention":
            q, k, v, bias = node.input[:4]
            if not bias or bias not in inits:
                raise ValueError(f"{node.name}: MultiHeadAttention without a constant bias")
            packed = array(bias).astype(np.float32)
        else:  # Attention: one packed Q/K/V projection
            x, weight, bias = node.input[:3]
            w = array(weight).astype(np.float32)
            packed = array(bias).astype(np.float32)
            hidden = w.shape[1] // 3
            q, k, v = (f"{p}_{part}_in" for part in "qkv")
            for j, (part, out) in enumerate(zip("qkv", (q, k, v), strict=True)):
                new_inits[f"{p}_{part}_w"] = w[:, j * hidden : (j + 1) * hidden]
                nodes.append(helper.make_node("MatMul", [x, f"{p}_{part}_w"], [out], name=f"{p}_{part}_proj"))
        hidden = packed.shape[0] // 3
        head_size = hidden // heads
        new_inits[f"{p}_split_heads"] = np.array([0, 0, heads, head_size], np.int64)
        new_inits[f"{p}_scale"] = np.array(1.0 / np.sqrt(head_size), np.float32)
        for j, (part, src) in enumerate(zip("qkv", (q, k, v), strict=True)):
            new_inits[f"{p}_{part}_bias"] = packed[j * hidden : (j + 1) * hidden]
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]  # Kᵀ directly: (batch, heads, head_size, keys)
            nodes += [
                helper.make_node("Add", [src, f"{p}_{part}_bias"], [f"{p}_{part}"], name=f"{p}_{part}_bias"),
                helper.make_node("Reshape", [f"{p}_{part}", f"{p}_split_heads"], [f"{p}_{part}4"], name=f"{p}_{part}4"),
                helper.make_node("Transpose", [f"{p}_{part}4"], [f"{p}_{part}t"], name=f"{p}_{part}t", perm=perm),
            ]
        nodes += [
            helper.make_node("MatMul", [f"{p}_qt", f"{p}_kt"], [f"{p}_scores"], name=f"{p}_qk"),
            helper.make_node("Mul", [f"{p}_scores", f"{p}_scale"], [f"{p}_scaled"], name=f"{p}_scale"),
            helper.make_node("Add", [f"{p}_scaled", "ovform_mask_bias"], [f"{p}_masked"], name=f"{p}_mask"),
            helper.make_node("Softmax", [f"{p}_masked"], [f"{p}_probs"], name=f"{p}_softmax", axis=-1),
            helper.make_node("MatMul", [f"{p}_probs", f"{p}_vt"], [f"{p}_context"], name=f"{p}_pv"),
            helper.make_node("Transpose", [f"{p}_context"], [f"{p}_merged"], name=f"{p}_merge", perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{p}_merged", "ovform_merge_heads"], [node.output[0]], name=f"{p}_out"),
        ]
    if not new_inits:
        return
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in new_inits.items())
    del graph.node[:]
    graph.node.extend(nodes)


# ---- helpers -----------------------------------------------------------------------------------------------------


def _prune(graph: Any) -> None:
    """Drop nodes nothing reads (transitively) and initializers no node reads."""
    outputs = {o.name for o in graph.output}
    nodes = list(graph.node)
    while True:
        read = {name for n in nodes for name in n.input} | outputs
        live = [n for n in nodes if any(o in read for o in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for n in nodes for name in n.input}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _readers(graph: Any) -> dict[str, list[Any]]:
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _arrays(inits: dict[str, Any]) -> Any:
    from onnx import numpy_helper

    def array(name: str) -> np.ndarray:
        return np.asarray(numpy_helper.to_array(inits[name]))

    return array


def _attribute(node: Any, name: str) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    raise ValueError(f"{node.name}: no {name} attribute")


def _safe(name: str) -> str:
    return "ovform_" + "".join(c if c.isalnum() else "_" for c in name)
