"""int8 CPU graph: per-token dynamic activations x per-channel weights, SmoothQuant-balanced, int8 embeddings.

Every dense layer ``y = x @ W`` (x: (B, T, K), W: (K, N)) becomes::

    x' = x * inv_smooth                       # SmoothQuant: per-channel outliers moved from x into W (calibrated)
    m = max(max(|x'|, axis=-1), eps)          # one scale per token (B, T, 1): no dependence on the rest of the batch
    q = QuantizeLinear(x', m / 127, 128, block_size=K)             # uint8 in [1, 255], each row its own scale
    y = MatMulIntegerToFloat(q, W_q, a_scale=m, b_scale=col_scale / 127, zero point 128)    # W_q int8 in [-64, 64]

and the FFN output layer, whose input is a GELU output (never below -0.17), quantises ``x + 0.17`` one-sided::

    x' = (x + 0.17) * inv_smooth              # > 0, so m = max(x', axis=-1) needs no Abs and no eps
    q = QuantizeLinear(x', m / 127, block_size=K)                  # uint8 in [0, 127] (zero point 0)
    y = MatMulIntegerToFloat(q, W_q, a_scale=m, b_scale=col_scale / 127, zero point 0)      # W_q int8 in [-127, 127]

with ``0.17 * sum(W, axis=0)`` taken back out of the layer's bias.

Node economy (each small node costs ~1.5 us of dispatch on the CPU provider): QuantizeLinear's blocked form (opset 21)
takes one scale per row, so no Div normalises the rows first; MatMulIntegerToFloat takes the per-row scale as an
``a_scale`` of shape (B, T, 1) and multiplies its output by it, so no row-scale Mul follows (the layer's bias stays in
its own Add: the kernel would scale a bias input by the row scale too); one QuantizeLinear per graph makes the (B, T, 1)
zero-point tensor the signed sites' blocked quantisation needs; and the attention output's smoothing factors are folded
into the value projection (columns and bias), since attention is linear in V and the factors are powers of two.

onnxruntime's stock dynamic quantisation picks one activation scale per batch tensor, so a text's vector changes with
its batch-mates (cosine to itself down to 0.955 between batch 1 and 32 on this model, the benchmark's fidelity table);
per-token scales remove that, and smoothing recovers most of the accuracy per-tensor scaling loses to MiniLM's
outlier channels.

No integer product can saturate on any CPU. On x86 without VNNI (AVX2, AVX-512 without VNNI, SSE4.1) onnxruntime's
u8 x s8 kernels add each pair of products into a saturating int16 (``vpmaddubsw``/``pmaddubsw``; onnxruntime issue
#6004), so ``2 * max(activation) * max|weight| <= 32,767`` must hold: 255 * 64 * 2 = 32,640 for the signed layers,
127 * 127 * 2 = 32,258 for the shifted one (which is the one that needs 8-bit weights most: measured, 7-bit weights
there cost the most accuracy). VNNI and ARM accumulate in int32 anyway. Every instruction set therefore computes the
exact integer products and the graph gives the same vectors on every CPU; :mod:`export.reference` builds the graph's
exact float twin to prove it.

Smoothing factors are rounded to powers of two: the fp32 calibration pass differs in its last bits between CPUs
without FMA and those with it, and unrounded factors would make a re-export on such a CPU write different weights;
powers of two also scale exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.deps import require

Feeds = dict[str, np.ndarray]

INT16_MAX = 2**15 - 1
ACTIVATION_LEVELS = 127  # per-token activation steps: [1, 255] around zero point 128, or [0, 127] from zero point 0
SIGNED_ZERO_POINT = 128
# GELU(x) >= -0.16997 (at x = -0.7518): shifted by this, the FFN output layer's input is never negative
GELU_SHIFT = 0.17
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
OPSET = 21  # QuantizeLinear's blocked (per-row) form
# a scale no activation comes near: QuantizeLinear(m, HUGE, 128) is 128 wherever m is finite, (B, T, 1) like m
HUGE = 2.0**64


def weight_levels(zero_point: int) -> int:
    """Largest |int8 weight| for which a pair of uint8 x int8 products, activations up to zero_point + 127, fits
    in int16: 64 for signed activations (zero point 128), 127 for the shifted non-negative ones (zero point 0)."""
    return min(127, INT16_MAX // (2 * (zero_point + ACTIVATION_LEVELS)))


@dataclass(frozen=True)
class Int8Settings:
    """How the int8 graph is made; recorded in the manifest as the record of how it was made."""

    smooth_alpha: float = 0.5  # SmoothQuant migration strength; 0 disables smoothing
    calibration_sentences: int = 512
    quantize_word_embeddings: bool = True
    gelu_shift: str = "auto"  # FFN output layers: "auto" (whichever scheme measures closer), "always", "never"

    def __post_init__(self) -> None:
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise ValueError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")
        if self.gelu_shift not in ("auto", "always", "never"):
            raise ValueError(f"gelu_shift must be 'auto', 'always' or 'never', got {self.gelu_shift!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "per-token dynamic uint8 activations, per-channel int8 weights, int16-safe (MatMulInteger)",
            "weights": "[-64, 64] after signed activations (zero point 128); [-127, 127] after GELU + 0.17 >= 0 "
            "(zero point 0, activations [0, 127])",
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
    shift: float = 0.0  # > 0: a GELU output quantised as x + shift >= 0 from zero point 0 (when that measures better)
    smoothed_upstream: bool = False  # inv_smooth already applied by the layer producing the tensor (folded into V)

    @property
    def zero_point(self) -> int:
        return 0 if self.shift else SIGNED_ZERO_POINT


def quantize_int8(
    src: Path, dst: Path, calibration: Iterable[Feeds], settings: Int8Settings = Int8Settings()
) -> dict[str, int]:
    """Quantise every constant-weight MatMul of ``src``; return how many were quantised, and how many of them take
    the shifted GELU scheme."""
    onnx = require("onnx")
    model = onnx.load(str(src))
    weights = {t.name: t for t in model.graph.initializer}
    sites = _sites(model, weights)
    if settings.gelu_shift == "never":
        for site in sites:
            site.shift = 0.0
    shiftable = [s.tensor for s in sites if s.shift and settings.gelu_shift == "auto"]
    if settings.smooth_alpha > 0 or shiftable:
        maxima, samples = activation_statistics(model, [s.tensor for s in sites], calibration, keep=shiftable)
        for site in sites:
            if site.tensor in samples and not _shift_pays_off(
                site, weights, maxima[site.tensor], samples[site.tensor], settings
            ):
                site.shift = 0.0
            if settings.smooth_alpha > 0:
                # a shifted site's largest value is max(x) + shift (max |x| is max(x) for a GELU output above 0.17)
                act_max = maxima[site.tensor] + np.float32(site.shift)
                site.inv_smooth = _inverse_smoothing(site, weights, act_max, settings.smooth_alpha)
    fold_smoothing_into_values(model, sites, weights)
    _rewrite(model, sites, weights)
    if settings.quantize_word_embeddings:
        quantize_embedding_rows(model, word_embedding_gather(model))
    onnx.save(model, str(dst))
    return {
        "quantized_matmuls": sum(len(s.matmuls) for s in sites),
        "shifted_gelu_matmuls": sum(len(s.matmuls) for s in sites if s.shift),
    }


def _sites(model: Any, weights: dict[str, Any]) -> list[_Site]:
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    sites: dict[str, _Site] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2:
            x = node.input[0]
            shift = GELU_SHIFT if producers.get(x) in GELU_OPS else 0.0
            site = sites.setdefault(x, _Site(x, f"rowq{len(sites)}", [], shift=shift))
            site.matmuls.append(node)
    return list(sites.values())


def activation_statistics(
    model: Any, tensors: list[str], calibration: Iterable[Feeds], keep: list[str], rows: int = 8192
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-channel max |x| of each tensor over the calibration batches, run on the fp32 graph, and the first
    ``rows`` token rows of each tensor in ``keep``."""
    onnx, ort = require("onnx"), require("onnxruntime")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend([onnx.helper.make_empty_tensor_value_info(t) for t in tensors])
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    kept: dict[str, list[np.ndarray]] = {name: [] for name in keep}
    for feeds in calibration:
        for name, value in zip(tensors, session.run(tensors, feeds), strict=True):
            real = value[feeds["attention_mask"].astype(bool)]  # padded positions say nothing about real activations
            channel_max = np.abs(real).max(axis=0)
            maxima[name] = np.maximum(maxima.get(name, channel_max), channel_max)
            if name in kept and sum(len(k) for k in kept[name]) < rows:
                kept[name].append(real)
    if not maxima:
        raise ValueError("calibration needs at least one batch")
    return maxima, {name: np.concatenate(parts)[:rows] for name, parts in kept.items()}


def _shift_pays_off(
    site: _Site, weights: dict[str, Any], act_max: np.ndarray, x: np.ndarray, settings: Int8Settings
) -> bool:
    """Whether the shifted scheme (x + shift from zero point 0, 8-bit weights) reproduces this site's layers more
    closely than the signed one (7-bit weights) on the calibration rows ``x``: the shift costs resolution where a
    GELU's outputs are small next to it (e.g. random weights), and gains a weight bit where they are not."""
    numpy_helper = require("onnx").numpy_helper
    errors = {}
    for shift in (0.0, site.shift):
        trial = _Site(site.tensor, site.prefix, site.matmuls, shift=shift)
        if settings.smooth_alpha > 0:
            trial.inv_smooth = _inverse_smoothing(trial, weights, act_max + np.float32(shift), settings.smooth_alpha)
        errors[shift] = sum(
            _simulated_error(x, numpy_helper.to_array(weights[m.input[1]]), trial) for m in site.matmuls
        )
    return errors[site.shift] < errors[0.0]


def _simulated_error(x: np.ndarray, w: np.ndarray, site: _Site) -> float:
    """Mean over tokens of the relative squared error of ``x @ w`` computed the way the quantised graph computes it
    for ``site``'s scheme. Per token, not pooled: a few huge-activation tokens would dominate a pooled error, while
    each text's vector depends on all of its tokens (measured: the pooled error chose worse schemes)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    smooth = np.ones(x.shape[1]) if site.inv_smooth is None else site.inv_smooth.astype(np.float64)
    xs = (x64 + site.shift) * smooth
    m = np.maximum((xs if site.shift else np.abs(xs)).max(axis=1, keepdims=True), 1e-8)
    zero = site.zero_point
    q = np.clip(np.rint(xs / m * ACTIVATION_LEVELS), -zero, 255 - zero)
    levels = weight_levels(zero)
    ws = w64 / smooth[:, None]
    col = np.maximum(np.abs(ws).max(axis=0), 1e-12) / levels
    w_q = np.clip(np.rint(ws / col), -levels, levels)
    approx = (q * m / ACTIVATION_LEVELS) @ (w_q * col) - site.shift * w64.sum(axis=0)
    exact = x64 @ w64
    per_token = np.sum((approx - exact) ** 2, axis=1) / np.maximum(np.sum(exact**2, axis=1), 1e-30)
    return float(per_token.mean())


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
            numpy_helper.from_array(np.array(SIGNED_ZERO_POINT, np.uint8), "rowq_zp"),
            numpy_helper.from_array(np.array(0, np.uint8), "rowq_zp0"),
            numpy_helper.from_array(np.array(HUGE, np.float32), "rowq_huge"),
            numpy_helper.from_array(np.array([-1], np.int64), "rowq_last_axis"),
        ]
    )
    upgrade_opset(model, OPSET)
    # keyed by output name: protobuf may hand out a new wrapper object for the same node on each iteration
    by_first_matmul = {s.matmuls[0].output[0]: s for s in sites}
    replaced = {m.output[0] for s in sites for m in s.matmuls}
    corrections: dict[str, np.ndarray] = {}  # matmul output -> what the shift added to it, to take back out
    nodes = []
    for node in graph.node:
        if node.output[0] not in replaced:
            nodes.append(node)
            continue
        site = by_first_matmul.get(node.output[0])
        if site is not None:  # quantise the shared input once, just before its first consumer
            first_signed = not site.shift and not any(n.output[0] == "rowq_zp_rows" for n in nodes)
            nodes += _quantize_activation(helper, graph, numpy_helper, site, weights, first_signed)
            for matmul in site.matmuls:
                nodes += _integer_matmul(helper, graph, numpy_helper, weights, site, matmul)
                if site.shift:
                    w = numpy_helper.to_array(weights[matmul.input[1]]).astype(np.float64)
                    corrections[matmul.output[0]] = site.shift * w.sum(axis=0)  # (x + c) @ W = x @ W + c 1 W
    nodes = _take_back_shifts(helper, graph, numpy_helper, nodes, corrections)
    replace_nodes(graph, nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


# Reduce operators whose ``axes`` moved from an attribute to an input in opset 18 (ReduceSum did so in opset 13)
_AXES_TO_INPUT = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin")
_AXES_TO_INPUT += ("ReduceProd", "ReduceSumSquare")
# default-domain operators of the traced BERT graph whose semantics do not change between opsets 17 and 21
_UNCHANGED_17_TO_21 = {"Add", "Cast", "Clip", "Constant", "ConstantOfShape", "Div", "Equal", "Erf", "Expand", "Gather"}
_UNCHANGED_17_TO_21 |= {"LayerNormalization", "MatMul", "Mul", "Pow", "ReduceSum", "Reshape", "Shape", "Slice", "Sqrt"}
_UNCHANGED_17_TO_21 |= {"Sub", "Tanh", "Transpose", "Unsqueeze", "Where", "Abs", "Max", "QuantizeLinear", "Softmax"}


def upgrade_opset(model: Any, version: int) -> None:
    """Raise the default-domain opset of a traced opset-17 graph to ``version`` (<= 21): Reduce operators get their
    axes as an input; any operator not known to keep its meaning up to opset 21 is refused."""
    onnx = require("onnx")
    current = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if current.version >= version:
        return
    if current.version < 17 or version > 21:
        raise ValueError(f"can only raise opset 17..21, not {current.version} -> {version}")
    graph = model.graph
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _AXES_TO_INPUT:
            axes = [a for a in node.attribute if a.name == "axes"]
            if axes:
                name = f"{node.name or node.output[0]}_axes"
                graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes[0].ints, np.int64), name))
                node.attribute.remove(axes[0])
                node.input.append(name)
        elif node.op_type not in _UNCHANGED_17_TO_21:
            raise ValueError(f"{node.name}: {node.op_type} is not known to keep its meaning from opset 17 to {version}")
    current.version = version
    model.ir_version = max(model.ir_version, 10)  # opset 21 needs IR version 10


def fold_smoothing_into_values(model: Any, sites: list[_Site], weights: dict[str, Any]) -> None:
    """For each site fed by a MultiHeadAttention whose value projection is a constant MatMul read only by it, scale
    that projection's columns and the value part of the attention bias by the site's inverse smoothing factors, and
    mark the site smoothed upstream. Attention output = softmax(.) @ V is linear in V, and powers of two scale
    exactly, so the attention output equals the smoothed one the site's Mul would have made."""
    numpy_helper = require("onnx").numpy_helper
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for site in sites:
        mha = producers.get(site.tensor)
        if site.inv_smooth is None or mha is None or mha.op_type != "MultiHeadAttention" or len(mha.input) < 4:
            continue
        value, bias = mha.input[2], mha.input[3]
        matmul = producers.get(value)
        if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in weights or readers[value] != 1:
            continue
        if bias not in weights or readers[bias] != 1 or readers[matmul.input[1]] != 1:
            continue
        inv = site.inv_smooth.astype(np.float32)
        w = numpy_helper.to_array(weights[matmul.input[1]]) * inv  # (K, N): column n times inv[n]
        b = numpy_helper.to_array(weights[bias]).copy()
        b[-inv.shape[0] :] *= inv  # bias = [q | k | v]
        for name, array in ((matmul.input[1], w), (bias, b)):
            folded = numpy_helper.from_array(array.astype(np.float32), name)
            weights[name].CopyFrom(folded)
        site.smoothed_upstream = True


def replace_nodes(graph: Any, nodes: list[Any]) -> None:
    """Make ``nodes`` the graph's nodes and drop the initializers none of them reads any more."""
    used = {name for n in nodes for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)


def _take_back_shifts(
    helper: Any, graph: Any, numpy_helper: Any, nodes: list[Any], corrections: dict[str, np.ndarray]
) -> list[Any]:
    """Subtract each shifted layer's constant excess: folded into the bias Add that follows it, else a new Sub."""
    if not corrections:
        return nodes
    inits = {t.name: t for t in graph.initializer}
    out: list[Any] = []
    for node in nodes:
        out.append(node)
        if node.output[0] not in corrections:
            continue
        excess = corrections[node.output[0]]
        bias_adds = [
            n
            for n in nodes
            if n.op_type == "Add"
            and node.output[0] in n.input
            and any(i in inits and tuple(inits[i].dims) == excess.shape for i in n.input)
        ]
        if len(bias_adds) == 1:
            # a new initializer: the exporter shares identical constants (e.g. all-zero biases) between layers
            add = bias_adds[0]
            slot = next(k for k, i in enumerate(add.input) if i in inits)
            bias = numpy_helper.to_array(inits[add.input[slot]]).astype(np.float64)
            unshifted = f"{node.output[0]}_unshifted_bias"
            graph.initializer.append(numpy_helper.from_array((bias - excess).astype(np.float32), unshifted))
            add.input[slot] = unshifted
            continue
        # no bias to fold into: rename the layer's output and subtract the excess explicitly
        raw = f"{node.output[0]}_shifted"
        node.output[0] = raw
        graph.initializer.append(numpy_helper.from_array(excess.astype(np.float32), f"{raw}_excess"))
        out.append(helper.make_node("Sub", [raw, f"{raw}_excess"], [raw[: -len("_shifted")]], name=f"{raw}_unshift"))
    return out


def _quantize_activation(
    helper: Any, graph: Any, numpy_helper: Any, site: _Site, weights: dict[str, Any], first_signed: bool
) -> list[Any]:
    p, x = site.prefix, site.tensor
    width = int(weights[site.matmuls[0].input[1]].dims[0])  # K: the row length, one quantisation block
    pre = []
    if site.shift:  # GELU output: x + shift >= 0, so one-sided quantisation keeps all 127 steps for real values
        graph.initializer.append(numpy_helper.from_array(np.array(site.shift, np.float32), f"{p}_shift"))
        pre.append(helper.make_node("Add", [x, f"{p}_shift"], [f"{p}_shifted"], name=f"{p}_shift"))
        x = f"{p}_shifted"
    if site.inv_smooth is not None and not site.smoothed_upstream:
        graph.initializer.append(numpy_helper.from_array(site.inv_smooth, f"{p}_inv_smooth"))
        pre.append(helper.make_node("Mul", [x, f"{p}_inv_smooth"], [f"{p}_x"], name=f"{p}_smooth"))
        x = f"{p}_x"
    if site.shift:
        # x + 0.17 >= 3e-5 (GELU >= -0.16997), times a factor >= 2^-10: every row's max is > 0 without an eps
        pre.append(helper.make_node("ReduceMax", [x, "rowq_last_axis"], [f"{p}_scale"], name=f"{p}_amax", keepdims=1))
    else:
        pre += [
            helper.make_node("Abs", [x], [f"{p}_abs"], name=f"{p}_abs"),
            helper.make_node("ReduceMax", [f"{p}_abs", "rowq_last_axis"], [f"{p}_amax"], name=f"{p}_amax", keepdims=1),
            helper.make_node("Max", [f"{p}_amax", "rowq_eps"], [f"{p}_scale"], name=f"{p}_amax_eps"),  # (B, T, 1)
        ]
    # each row's quantisation step, m / 127, so that the row's largest |value| becomes 127 steps
    pre.append(helper.make_node("Mul", [f"{p}_scale", "rowq_inv127"], [f"{p}_step"], name=f"{p}_step"))
    if first_signed:  # the (B, T, 1) zero points of every signed site: 128 everywhere, shaped like the steps
        pre.append(
            helper.make_node(
                "QuantizeLinear", [f"{p}_step", "rowq_huge", "rowq_zp"], ["rowq_zp_rows"], name="rowq_zp_rows"
            )
        )
    inputs = [x, f"{p}_step"] + ([] if site.shift else ["rowq_zp_rows"])  # no zero point: uint8 around 0
    return [
        *pre,
        helper.make_node("QuantizeLinear", inputs, [f"{p}_q"], name=f"{p}_quant", axis=-1, block_size=width),
    ]


def _integer_matmul(
    helper: Any, graph: Any, numpy_helper: Any, weights: dict[str, Any], site: _Site, matmul: Any
) -> list[Any]:
    w = numpy_helper.to_array(weights[matmul.input[1]]).astype(np.float32)  # (K, N)
    if site.inv_smooth is not None:
        w = w / site.inv_smooth[:, None]
    levels = weight_levels(site.zero_point)
    col_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / levels  # (N,)
    w_q = np.clip(np.rint(w / col_scale), -levels, levels).astype(np.int8)
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
        # int8 GEMM, per-column scales applied in its epilogue, then each row times its a_scale (onnxruntime contrib op)
        helper.make_node(
            "MatMulIntegerToFloat",
            [f"{p}_q", f"{q}_w", f"{p}_scale", f"{q}_col_scale", "rowq_zp0" if site.shift else "rowq_zp"],
            [matmul.output[0]],
            name=f"{q}_matmul",
            domain="com.microsoft",
        ),
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
