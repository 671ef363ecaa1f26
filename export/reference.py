"""The exact reference of an int8 graph: the same integers, multiplied in float32 instead of an integer GEMM.

Every ``MatMulIntegerToFloat(q, w, a_scale, b_scale, a_zero_point)`` of :mod:`export.quantize` becomes::

    Cast<float32>(MatMul(Cast(q) - a_zero_point, w)) * (a_scale * b_scale)     # a_scale a constant scalar
    Cast<float32>(MatMul(Cast(q) - a_zero_point, w)) * b_scale * a_scale       # a_scale computed: one per row

in the order onnxruntime's CPU kernel multiplies: a scalar a_scale is folded into the per-column multipliers of the
GEMM's epilogue, a per-row a_scale of shape (..., M, 1) scales the finished output (contrib op MatMulIntegerToFloat,
``ScaleOutput``). :mod:`export.quantize` feeds every GEMM its activations' per-token scale that way.

where the MatMul runs in float32 when every dot product stays below 2^24 in magnitude, else in float64 (below 2^53).
Either holds each partial sum exactly, in any summation order, so the MatMul yields the exact integer dot product;
it is then rounded to float32 and scaled once, as onnxruntime's integer kernels do when they do not saturate.
Running this graph next to the int8 graph on the same CPU therefore isolates the integer kernels: any difference
above float rounding of the other (float) operators is a kernel that lost precision, e.g. the int16 saturation of
``vpmaddubsw`` on CPUs without VNNI (onnxruntime issue #6004).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from export.deps import require
from export.quantize import replace_nodes
from runtime.artifact import TOKENIZER_FILE, FileEntry, Precision, Variant, read_manifest

# float32 / float64 represent every integer up to 2^24 / 2^53 exactly; an integer dot product stays exact below.
EXACT_FLOAT32_LIMIT = 2**24
EXACT_FLOAT64_LIMIT = 2**53


def exact_reference(src: Path, dst: Path) -> int:
    """Write the exact reference of int8 graph ``src`` to ``dst``; return how many integer matmuls were rewritten.

    Raises ValueError when a dot product could exceed what float64 holds exactly.
    """
    onnx = require("onnx")
    model = onnx.load(str(src))
    rewritten = rewrite_integer_matmuls(model)
    onnx.save(model, str(dst))
    return rewritten


def rewrite_integer_matmuls(model: Any) -> int:
    """Rewrite every MatMulIntegerToFloat of ``model`` in place (see the module docstring)."""
    onnx = require("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            nodes.append(node)
            continue
        q, w_name, a_scale, b_scale, a_zp = list(node.input)[:5]
        if len(node.input) > 5 or w_name not in inits or a_zp not in inits:
            raise ValueError(f"{node.name}: expected (q, constant int8 w, a_scale, b_scale, constant a_zero_point)")
        w = numpy_helper.to_array(inits[w_name]).astype(np.int64)
        zero = int(numpy_helper.to_array(inits[a_zp]))
        k = w.shape[0]
        bound = k * max(zero, 255 - zero) * int(np.abs(w).max())
        if bound >= EXACT_FLOAT64_LIMIT:
            raise ValueError(f"{node.name}: |dot product| may reach {bound} >= 2^53; float64 would not be exact")
        wide = bound >= EXACT_FLOAT32_LIMIT
        dtype, onnx_type = (np.float64, onnx.TensorProto.DOUBLE) if wide else (np.float32, onnx.TensorProto.FLOAT)
        p = f"{node.name}_exact"
        graph.initializer.extend(
            [
                numpy_helper.from_array(w.astype(dtype), f"{p}_w"),
                numpy_helper.from_array(np.array(zero, dtype), f"{p}_zp"),
            ]
        )
        acc = f"{p}_acc64" if wide else f"{p}_acc"
        nodes += [
            helper.make_node("Cast", [q], [f"{p}_qf"], name=f"{p}_cast", to=onnx_type),
            helper.make_node("Sub", [f"{p}_qf", f"{p}_zp"], [f"{p}_centred"], name=f"{p}_centre"),
            helper.make_node("MatMul", [f"{p}_centred", f"{p}_w"], [acc], name=f"{p}_matmul"),
        ]
        if wide:  # int32 -> float32 rounding, as the integer kernel's epilogue does
            nodes.append(helper.make_node("Cast", [acc], [f"{p}_acc"], name=f"{p}_round", to=onnx.TensorProto.FLOAT))
        if a_scale in inits and int(np.prod(inits[a_scale].dims)) == 1:
            nodes += [
                helper.make_node("Mul", [a_scale, b_scale], [f"{p}_scale"], name=f"{p}_scales"),
                helper.make_node("Mul", [f"{p}_acc", f"{p}_scale"], [node.output[0]], name=f"{p}_dequant"),
            ]
        else:  # a per-row scale computed in the graph, applied after the per-column one
            nodes += [
                helper.make_node("Mul", [f"{p}_acc", b_scale], [f"{p}_cols"], name=f"{p}_dequant"),
                helper.make_node("Mul", [f"{p}_cols", a_scale], [node.output[0]], name=f"{p}_row_scale"),
            ]
        count += 1
    replace_nodes(graph, nodes)
    return count


def reference_artifact(folder: Path, dst: Path) -> Path:
    """A copy of artifact ``folder`` whose int8 slot holds the exact reference of its int8 graph.

    ``runtime.load(dst, precision="int8")`` then runs the reference through the very tokenisation and batching the
    int8 graph gets, so the two encoders' outputs are comparable vector for vector.
    """
    manifest = read_manifest(folder)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / TOKENIZER_FILE, dst / TOKENIZER_FILE)
    graph = dst / Precision.INT8.file_name
    exact_reference(folder / manifest.variants[Precision.INT8].graph.file, graph)
    variant = Variant(Precision.INT8, FileEntry.of(graph), settings={"exact_reference_of": str(folder)})
    replace(manifest, variants={Precision.INT8: variant}).write(dst)
    return dst
