"""The exact reference of an int8 graph: the same integers, multiplied in float32 instead of an integer GEMM.

Every ``MatMulIntegerToFloat(q, w, a_scale, b_scale, a_zero_point)`` of :mod:`export.quantize` becomes::

    Cast<float32>(MatMul(Cast(q) - a_zero_point, w)) * (a_scale * b_scale)     # a_scale a constant scalar
    Cast<float32>(MatMul(Cast(q) - a_zero_point, w)) * b_scale * a_scale       # a_scale computed: one per row

in the order onnxruntime's CPU kernel multiplies: a scalar a_scale is folded into the per-column multipliers of the
GEMM's epilogue, a per-row a_scale of shape (..., M, 1) scales the finished output (contrib op MatMulIntegerToFloat,
``ScaleOutput``). :mod:`export.quantize` feeds every GEMM its activations' per-token scale that way.

where the MatMul runs in float32 when every dot product stays below 2^24 in magnitude. Where it may not, but each
half of the K dimension does, the two halves run as float32 MatMuls and one float32 Add joins them: each half is an
exact integer, and IEEE addition of two exact values is the exact sum correctly rounded, which is what rounding the
integer result to float32 gives. Beyond that, float64 (below 2^53). Each holds every partial sum exactly, in any
summation order, so the result is the exact integer dot product rounded to float32, then scaled once, as
onnxruntime's integer kernels do when they do not saturate. (The halves keep the reference cheap where it must run
under an emulated CPU: float64 GEMMs took most of a qemu Haswell check's 5 minutes.)

Bounds use the activations' range as :mod:`export.quantize` builds it: each row is quantised with its largest
magnitude at 127 steps, so ``|q - a_zero_point| <= 127`` at either zero point (128 around signed values, 0 for the
shifted GELU outputs).
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
from export.quantize import ACTIVATION_LEVELS, replace_nodes
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
        half = (k + 1) // 2
        largest = int(np.abs(w).max())
        bound = k * ACTIVATION_LEVELS * largest
        if bound >= EXACT_FLOAT64_LIMIT:
            raise ValueError(f"{node.name}: |dot product| may reach {bound} >= 2^53; float64 would not be exact")
        split = bound >= EXACT_FLOAT32_LIMIT and half * ACTIVATION_LEVELS * largest < EXACT_FLOAT32_LIMIT
        wide = bound >= EXACT_FLOAT32_LIMIT and not split
        dtype, onnx_type = (np.float64, onnx.TensorProto.DOUBLE) if wide else (np.float32, onnx.TensorProto.FLOAT)
        p = f"{node.name}_exact"
        graph.initializer.append(numpy_helper.from_array(np.array(zero, dtype), f"{p}_zp"))
        nodes += [
            helper.make_node("Cast", [q], [f"{p}_qf"], name=f"{p}_cast", to=onnx_type),
            helper.make_node("Sub", [f"{p}_qf", f"{p}_zp"], [f"{p}_centred"], name=f"{p}_centre"),
        ]
        if split:  # two exact float32 halves of K, joined by one correctly rounded Add
            graph.initializer.extend(
                [
                    numpy_helper.from_array(w[:half].astype(np.float32), f"{p}_w0"),
                    numpy_helper.from_array(w[half:].astype(np.float32), f"{p}_w1"),
                    numpy_helper.from_array(np.array([half], np.int64), f"{p}_cut"),
                    numpy_helper.from_array(np.array([-1], np.int64), f"{p}_axis"),
                    numpy_helper.from_array(np.array([0], np.int64), f"{p}_start"),
                    numpy_helper.from_array(np.array([k], np.int64), f"{p}_end"),
                ]
            )
            nodes += [
                helper.make_node("Slice", [f"{p}_centred", f"{p}_start", f"{p}_cut", f"{p}_axis"], [f"{p}_x0"]),
                helper.make_node("Slice", [f"{p}_centred", f"{p}_cut", f"{p}_end", f"{p}_axis"], [f"{p}_x1"]),
                helper.make_node("MatMul", [f"{p}_x0", f"{p}_w0"], [f"{p}_acc0"], name=f"{p}_matmul0"),
                helper.make_node("MatMul", [f"{p}_x1", f"{p}_w1"], [f"{p}_acc1"], name=f"{p}_matmul1"),
                helper.make_node("Add", [f"{p}_acc0", f"{p}_acc1"], [f"{p}_acc"], name=f"{p}_join"),
            ]
        else:
            graph.initializer.append(numpy_helper.from_array(w.astype(dtype), f"{p}_w"))
            acc = f"{p}_acc64" if wide else f"{p}_acc"
            nodes.append(helper.make_node("MatMul", [f"{p}_centred", f"{p}_w"], [acc], name=f"{p}_matmul"))
            if wide:  # int32 -> float32 rounding, as the integer kernel's epilogue does
                cast = helper.make_node("Cast", [acc], [f"{p}_acc"], name=f"{p}_round", to=onnx.TensorProto.FLOAT)
                nodes.append(cast)
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
