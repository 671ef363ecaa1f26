"""int8 CPU graph: per-token dynamic activations x per-channel 7-bit weights, SmoothQuant-balanced, int8 embeddings.

Every dense layer ``y = x @ W`` (x: (B, T, K), W: (K, N)) becomes::

    x' = x * inv_smooth                       # SmoothQuant: per-channel outliers moved from x into W (calibrated)
    m = max(|x'|, axis=-1)                    # one scale per token: no dependence on the rest of the batch
    q = QuantizeLinear(x' / m, 1/127, 128)    # uint8 in [1, 255]
    y = MatMulIntegerToFloat(q, W_q, col_scale / 127, zero point 128) * m     # W_q int8 in [-64, 64]

onnxruntime's stock dynamic quantisation picks one activation scale per batch tensor, so a text's vector changes with
its batch-mates (cosine to itself down to 0.955 between batch 1 and 32 on this model, the benchmark's fidelity table);
per-token scales remove that, and smoothing recovers most of the accuracy per-tensor scaling loses to MiniLM's
outlier channels.

Weights use 7 bits and a half (|w| <= 64), not 8: on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI, SSE4.1)
onnxruntime's u8 x s8 kernels add each pair of products into a saturating int16 (``vpmaddubsw``/``pmaddubsw``), and
255 * 127 * 2 = 64,770 overflows it (onnxruntime issue #6004). With |w| <= 64 a pair is at most 255 * 64 * 2 = 32,640
< 32,767, so every instruction set computes the exact integer product (VNNI and ARM accumulate in int32 anyway) and
the graph gives the same vectors on every CPU. :mod:`export.reference` builds the graph's exact float twin to prove it.

Smoothing factors are rounded to powers of two: the fp32 calibration pass differs in its last bits between CPUs, and
unrounded factors made a re-export on another CPU write different weights; powers of two also scale exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.deps import require

Feeds = dict[str, np.ndarray]

# |int8 weight| bound that keeps u8 x s8 pair sums inside int16 (see the module docstring): 2 * 255 * 64 < 2^15.
WEIGHT_LEVELS = 64
ACTIVATION_LEVELS = 127  # uint8 activations around zero point 128: [1, 255]


@dataclass(frozen=True)
class Int8Settings:
    """How the int8 graph is made; recorded in the manifest as the record of how it was made."""

    smooth_alpha: float = 0.5  # SmoothQuant migration strength; 0 disables smoothing
    calibration_sentences: int = 512
    quantize_word_embeddings: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise ValueError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "per-token dynamic uint8 activations, per-channel int8 weights in [-64, 64] (MatMulInteger)",
            "weight_levels": WEIGHT_LEVELS,
            "smoothing_rounded_to": "powers of two",
            **asdict(self),
        }


@dataclass
class _Site:
    """One activation tensor feeding >= 1 dense layers (Q, K and V share theirs)."""

    tensor: str
    prefix: str
    matmuls: list[Any]
    inv_smooth: np.ndarray | None = None


def quantize_int8(src: Path, dst: Path, calibration: Iterable[Feeds], settings: Int8Settings = Int8Settings()) -> int:
    """Quantise every constant-weight MatMul of ``src``; return how many were quantised."""
    onnx = require("onnx")
    model = onnx.load(str(src))
    weights = {t.name: t for t in model.graph.initializer}
    sites = _sites(model, weights)
    if settings.smooth_alpha > 0:
        maxima = activation_maxima(model, [s.tensor for s in sites], calibration)
        for site in sites:
            site.inv_smooth = _inverse_smoothing(site, weights, maxima[site.tensor], settings.smooth_alpha)
    _rewrite(model, sites, weights)
    if settings.quantize_word_embeddings:
        quantize_embedding_rows(model, word_embedding_gather(model))
    onnx.save(model, str(dst))
    return sum(len(s.matmuls) for s in sites)


def _sites(model: Any, weights: dict[str, Any]) -> list[_Site]:
    sites: dict[str, _Site] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2:
            site = sites.setdefault(node.input[0], _Site(node.input[0], f"rowq{len(sites)}", []))
            site.matmuls.append(node)
    return list(sites.values())


def activation_maxima(model: Any, tensors: list[str], calibration: Iterable[Feeds]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of each tensor over the calibration batches, run on the fp32 graph."""
    onnx, ort = require("onnx"), require("onnxruntime")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend([onnx.helper.make_empty_tensor_value_info(t) for t in tensors])
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feeds in calibration:
        for name, value in zip(tensors, session.run(tensors, feeds), strict=True):
            mask = feeds["attention_mask"].astype(bool)  # padded positions say nothing about real activations
            channel_max = np.abs(value[mask]).max(axis=0)
            maxima[name] = np.maximum(maxima.get(name, channel_max), channel_max)
    if not maxima:
        raise ValueError("smoothing needs at least one calibration batch")
    return maxima


def _inverse_smoothing(site: _Site, weights: dict[str, Any], act_max: np.ndarray, alpha: float) -> np.ndarray:
    numpy_helper = require("onnx").numpy_helper
    w_max = np.max([np.abs(numpy_helper.to_array(weights[m.input[1]])).max(axis=1) for m in site.matmuls], axis=0)
    smooth = np.power(np.maximum(act_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
    return power_of_two(1.0 / np.clip(smooth, 1e-3, 1e3))


def power_of_two(x: np.ndarray) -> np.ndarray:
    """Each positive value rounded to the nearest power of two (in log space), as float32."""
    exponents = np.rint(np.log2(np.asarray(x, dtype=np.float64))).astype(np.int64)
    return np.ldexp(np.float32(1.0), exponents).astype(np.float32)  # ldexp is exact, unlike exp2 on some SIMD paths


def _rewrite(model: Any, sites: list[_Site], weights: dict[str, Any]) -> None:
    onnx = require("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(1e-8, np.float32), "rowq_eps"),
            numpy_helper.from_array(np.array(1 / ACTIVATION_LEVELS, np.float32), "rowq_inv127"),
            numpy_helper.from_array(np.array(128, np.uint8), "rowq_zp"),
            numpy_helper.from_array(np.array(1.0, np.float32), "rowq_one"),
        ]
    )
    # keyed by output name: protobuf may hand out a new wrapper object for the same node on each iteration
    by_first_matmul = {s.matmuls[0].output[0]: s for s in sites}
    replaced = {m.output[0] for s in sites for m in s.matmuls}
    nodes = []
    for node in graph.node:
        if node.output[0] not in replaced:
            nodes.append(node)
            continue
        site = by_first_matmul.get(node.output[0])
        if site is not None:  # quantise the shared input once, just before its first consumer
            nodes += _quantize_activation(helper, graph, numpy_helper, site)
            for matmul in site.matmuls:
                nodes += _integer_matmul(helper, graph, numpy_helper, weights, site, matmul)
    used = {name for n in nodes for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _quantize_activation(helper: Any, graph: Any, numpy_helper: Any, site: _Site) -> list[Any]:
    p, x = site.prefix, site.tensor
    smooth = []
    if site.inv_smooth is not None:
        graph.initializer.append(numpy_helper.from_array(site.inv_smooth, f"{p}_inv_smooth"))
        smooth.append(helper.make_node("Mul", [x, f"{p}_inv_smooth"], [f"{p}_x"], name=f"{p}_smooth"))
        x = f"{p}_x"
    return [
        *smooth,
        helper.make_node("Abs", [x], [f"{p}_abs"], name=f"{p}_abs"),
        helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_amax"], name=f"{p}_amax", axes=[-1], keepdims=1),
        helper.make_node("Max", [f"{p}_amax", "rowq_eps"], [f"{p}_scale"], name=f"{p}_amax_eps"),  # (B, T, 1)
        helper.make_node("Div", [x, f"{p}_scale"], [f"{p}_unit"], name=f"{p}_div"),  # each row now in [-1, 1]
        # round(unit * 127) + 128 as uint8; the 1/127 is folded into each weight's column scales below
        helper.make_node("QuantizeLinear", [f"{p}_unit", "rowq_inv127", "rowq_zp"], [f"{p}_q"], name=f"{p}_quant"),
    ]


def _integer_matmul(
    helper: Any, graph: Any, numpy_helper: Any, weights: dict[str, Any], site: _Site, matmul: Any
) -> list[Any]:
    w = numpy_helper.to_array(weights[matmul.input[1]]).astype(np.float32)  # (K, N)
    if site.inv_smooth is not None:
        w = w / site.inv_smooth[:, None]
    col_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / WEIGHT_LEVELS  # (N,)
    w_q = np.clip(np.rint(w / col_scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    col_scale = col_scale / ACTIVATION_LEVELS  # the activation side's 1/127
    q = f"{matmul.name or matmul.output[0]}_int8".replace("/", "_")
    graph.initializer.extend(
        [
            numpy_helper.from_array(w_q, f"{q}_w"),
            numpy_helper.from_array(col_scale.astype(np.float32), f"{q}_col_scale"),
        ]
    )
    p = site.prefix
    return [
        # int8 GEMM with the per-column scales applied in its epilogue (onnxruntime contrib op)
        helper.make_node(
            "MatMulIntegerToFloat",
            [f"{p}_q", f"{q}_w", "rowq_one", f"{q}_col_scale", "rowq_zp"],
            [f"{q}_cols"],
            name=f"{q}_matmul",
            domain="com.microsoft",
        ),
        helper.make_node("Mul", [f"{q}_cols", f"{p}_scale"], [matmul.output[0]], name=f"{q}_row_scale"),
    ]


def word_embedding_gather(model: Any) -> Any:
    """The Gather that looks ``input_ids`` up in a 2-D initializer (the word-embedding table)."""
    tables = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    lookups = [
        n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables and n.input[1] == "input_ids"
    ]
    if len(lookups) != 1:
        raise ValueError(f"expected one word-embedding Gather on input_ids, found {len(lookups)}")
    return lookups[0]


def quantize_embedding_rows(model: Any, gather: Any) -> None:
    """Replace ``table[ids]`` by ``int8_table[ids] * row_scale[ids]``: 4x smaller, dequantised after the lookup."""
    onnx = require("onnx")
    numpy_helper, helper = onnx.numpy_helper, onnx.helper
    init = next(t for t in model.graph.initializer if t.name == gather.input[0])
    table = numpy_helper.to_array(init).astype(np.float32)  # (vocab, hidden)
    scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0  # (vocab, 1)
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    name, out, ids = init.name, gather.output[0], gather.input[1]
    model.graph.initializer.remove(init)
    model.graph.initializer.extend(
        [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")]
    )
    nodes = [
        helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_q"], name=f"{gather.name}_int8", axis=0),
        helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_scale"], name=f"{gather.name}_scale", axis=0),
        helper.make_node("Cast", [f"{out}_q"], [f"{out}_f"], name=f"{gather.name}_cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [f"{out}_f", f"{out}_scale"], [out], name=f"{gather.name}_dequant"),
    ]
    index = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)
