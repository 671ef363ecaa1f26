"""Kernel-level limits of the int8 graph on this CPU: how close its GEMMs run to the int8 ceiling, what a small node
costs, and whether onnxruntime's fused alternative beats the graph's per-token quantisation chain.

    python -m studies.kernels [--threads 2] [--quick] [--out STEM]

Each case is a one-node (or one-chain) graph timed alone, best of rounds, on the model's layer shapes at M = 15 rows
(one sentence) and M = 800 rows (a 32-sentence batch):
- ``gemm``: MatMulIntegerToFloat (u8 activations, s8 weights), the kernel behind every dense layer of the int8 graph,
  as giga-ops/s and as a share of the machine's int8 ceiling (MatMulInteger on square matrices, ``benchmarks.ceiling``).
- ``chain``: the per-token quantisation the graph runs around each GEMM, with the nodes ``export/quantize.py``
  writes (Abs, ReduceMax, Max, Mul, the zero-point QuantizeLinear, blocked QuantizeLinear, MatMulIntegerToFloat with
  the per-row a_scale; the SmoothQuant Mul and the GELU shift that some sites add in front are left out).
- ``matmulnbits``: onnxruntime's MatMulNBits with 8-bit weights in blocks and ``accuracy_level=4``, which quantises
  its input per row and block inside one kernel (the fused alternative to the chain).
- ``dispatch``: ten chained elementwise Muls against one, per extra node.
Writes ``benchmarks/results/kernels-<machine>.{json,md}`` (``--quick``: small sizes, ``build/bench-quick/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import ModelProto, TensorProto, helper, numpy_helper

from benchmarks.ceiling import FFN, HIDDEN
from benchmarks.ceiling import measure as measure_ceiling
from benchmarks.config import DEFAULT_OUT, QUICK_OUT
from benchmarks.machine import describe, library_versions

SHAPES = ((HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN))  # (K, N): Q/K/V/O, FFN in, FFN out
ROWS = (15, 800)
LEVELS = 127.0  # activations quantised to [-127, 127] around zero point 128, as the shipped graph does


def _model(nodes: list[Any], inits: list[TensorProto], k: int, n: int, in_type: int = TensorProto.FLOAT) -> bytes:
    graph = helper.make_graph(
        nodes,
        "kernel",
        [helper.make_tensor_value_info("x", in_type, ["M", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", n])],
        inits,
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]  # 21: blocked QuantizeLinear
    model: ModelProto = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    return model.SerializeToString()


def int8_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric weights in [-64, 64] (the shipped graph's int16-safe range) and their scales."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 64.0
    return np.round(w / scale).astype(np.int8), scale.astype(np.float32)


def gemm_graph(w: np.ndarray) -> bytes:
    """MatMulIntegerToFloat on already-quantised u8 input (zero point 128): the GEMM alone."""
    q, scale = int8_weights(w)
    node = helper.make_node(
        "MatMulIntegerToFloat", ["x", "w", "one", "ws", "zp"], ["y"], domain="com.microsoft", name="gemm"
    )
    inits = [
        numpy_helper.from_array(q, "w"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(scale, "ws"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
    ]
    return _model([node], inits, *w.shape, in_type=TensorProto.UINT8)


def chain_graph(w: np.ndarray) -> bytes:
    """x (float) -> per-token int8 -> GEMM -> float, with the shipped graph's nodes."""
    q, scale = int8_weights(w)
    k = w.shape[0]
    nodes = [
        helper.make_node("Abs", ["x"], ["abs"]),
        helper.make_node("ReduceMax", ["abs", "last"], ["amax"], keepdims=1),
        helper.make_node("Max", ["amax", "eps"], ["row_scale"]),
        helper.make_node("Mul", ["row_scale", "inv_levels"], ["step"]),
        helper.make_node("QuantizeLinear", ["step", "huge", "zp"], ["zp_rows"]),  # once per graph in the model
        helper.make_node("QuantizeLinear", ["x", "step", "zp_rows"], ["q"], axis=-1, block_size=k),
        helper.make_node("MatMulIntegerToFloat", ["q", "w", "row_scale", "ws", "zp"], ["y"], domain="com.microsoft"),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
        numpy_helper.from_array(np.array(1.0 / LEVELS, np.float32), "inv_levels"),
        numpy_helper.from_array(np.array(2.0**64, np.float32), "huge"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
        numpy_helper.from_array(q, "w"),
        numpy_helper.from_array((scale / LEVELS).astype(np.float32), "ws"),
    ]
    return _model(nodes, inits, *w.shape)


def nbits_graph(w: np.ndarray, block: int) -> bytes:
    """MatMulNBits, 8-bit symmetric weights in blocks of ``block`` along K, int8 compute (``accuracy_level=4``)."""
    k, n = w.shape
    blocks = w.T.reshape(n, k // block, block)
    scale = np.maximum(np.abs(blocks).max(axis=-1), 1e-12) / 127.0
    q = (np.round(blocks / scale[..., None]) + 128).astype(np.uint8)  # zero point 128, the 8-bit default
    node = helper.make_node(
        "MatMulNBits",
        ["x", "w", "scales"],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=8,
        block_size=block,
        accuracy_level=4,
    )
    inits = [numpy_helper.from_array(q, "w"), numpy_helper.from_array(scale.astype(np.float32).reshape(-1), "scales")]
    return _model([node], inits, k, n)


def muls_graph(count: int, k: int) -> bytes:
    """``count`` chained elementwise Muls on (rows, k); the constant is not 1, so no optimiser can drop them."""
    names = ["x", *[f"t{i}" for i in range(1, count)], "y"]
    nodes = [helper.make_node("Mul", [names[i], "c"], [names[i + 1]]) for i in range(count)]
    graph = helper.make_graph(
        nodes,
        "dispatch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", k])],
        [numpy_helper.from_array(np.full(k, 0.999, np.float32), "c")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def session(graph: bytes, threads: int) -> ort.InferenceSession:
    """A CPU session on ``threads`` intra-op threads, as the runtime builds them."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])


def best_seconds(run: Callable[[], object], budget_s: float, rounds: int) -> float:
    """Best per-call time over ``rounds`` rounds of about ``budget_s`` each, after a warm-up."""
    start = time.perf_counter()
    run()
    calls = max(3, int(budget_s / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure(
    threads: int, rows: tuple[int, ...], shapes: tuple[tuple[int, int], ...], budget_s: float
) -> dict[str, Any]:
    """All cases; each float-input graph's error against float math is recorded beside its time."""
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"gemm": [], "chain_vs_matmulnbits": [], "dispatch": {}}
    for k, n in shapes:
        w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        gemm = session(gemm_graph(w), threads)
        chain = session(chain_graph(w), threads)
        nbits = {block: session(nbits_graph(w, block), threads) for block in (32, 128) if k % block == 0}
        for m in rows:
            x = rng.standard_normal((m, k)).astype(np.float32)
            xq = rng.integers(1, 256, (m, k)).astype(np.uint8)
            ops = 2.0 * m * k * n
            t = best_seconds(lambda s=gemm, f={"x": xq}: s.run(None, f), budget_s, 3)
            out["gemm"].append({"k": k, "n": n, "m": m, "us": t * 1e6, "gops": ops / t / 1e9})
            want = x @ w
            row = {"k": k, "n": n, "m": m}
            for name, s in (("chain", chain), *((f"matmulnbits_b{b}", s) for b, s in nbits.items())):
                got = s.run(None, {"x": x})[0]
                row[f"{name}_rel_err"] = float(np.abs(got - want).max() / np.abs(want).max())
                row[f"{name}_us"] = best_seconds(lambda s=s, f={"x": x}: s.run(None, f), budget_s, 3) * 1e6
            out["chain_vs_matmulnbits"].append(row)
    for m in rows:
        feed = {"x": rng.standard_normal((m, HIDDEN)).astype(np.float32)}
        one, ten = session(muls_graph(1, HIDDEN), threads), session(muls_graph(10, HIDDEN), threads)
        t1 = best_seconds(lambda s=one, f=feed: s.run(None, f), budget_s, 3)
        t10 = best_seconds(lambda s=ten, f=feed: s.run(None, f), budget_s, 3)
        out["dispatch"][str(m)] = {
            "one_mul_us": t1 * 1e6,
            "ten_muls_us": t10 * 1e6,
            "per_node_us": (t10 - t1) / 9 * 1e6,
        }
    return out


def markdown(doc: dict[str, Any]) -> str:
    """The report's tables."""
    m, ceiling = doc["machine"], doc["ceiling_gops"]
    lines = [
        f"# Kernel limits of the int8 graph: {m['name']}",
        "",
        f"{m['cpu_model']} ({', '.join(m['isa'])}), {doc['created']}, {doc['threads']} threads, onnxruntime "
        f"{doc['libraries'].get('onnxruntime', '?')}. int8 ceiling (MatMulInteger, square; best of before and "
        f"after the cases, {' and '.join(f'{g:,.0f}' for g in doc['ceiling_before_after_gops'])}): "
        f"{ceiling:,.0f} G-ops/s.",
        "",
        "## The graph's GEMM alone (MatMulIntegerToFloat, u8 x s8)",
        "",
        "| K x N | rows | µs | G-ops/s | share of ceiling |",
        "|---|---|---|---|---|",
    ]
    for g in doc["results"]["gemm"]:
        lines.append(
            f"| {g['k']} x {g['n']} | {g['m']} | {g['us']:.1f} | {g['gops']:,.0f} | {g['gops'] / ceiling:.0%} |"
        )
    lines += [
        "",
        "## Per-token chain (as the graph runs it) vs MatMulNBits (8-bit, accuracy_level 4)",
        "",
        "| K x N | rows | chain µs | MatMulNBits block 32 µs | block 128 µs | relative error chain / b32 / b128 |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["results"]["chain_vs_matmulnbits"]:
        b32, b128 = r.get("matmulnbits_b32_us"), r.get("matmulnbits_b128_us")
        errs = " / ".join(
            f"{r[k]:.1e}" for k in ("chain_rel_err", "matmulnbits_b32_rel_err", "matmulnbits_b128_rel_err") if k in r
        )
        lines.append(
            f"| {r['k']} x {r['n']} | {r['m']} | {r['chain_us']:.1f} | "
            f"{'-' if b32 is None else f'{b32:.1f}'} | {'-' if b128 is None else f'{b128:.1f}'} | {errs} |"
        )
    lines += [
        "",
        "## Dispatch cost of a small node (Mul on rows x 384)",
        "",
        "| rows | 1 Mul µs | 10 Muls µs | per extra node µs |",
    ]
    lines.append("|---|---|---|---|")
    for rows, d in doc["results"]["dispatch"].items():
        lines.append(f"| {rows} | {d['one_mul_us']:.1f} | {d['ten_muls_us']:.1f} | {d['per_node_us']:.2f} |")
    return "\n".join(lines) + "\n"


def ceiling(n: int, threads: int) -> float:
    """The int8 ceiling: best MatMulInteger rate on square n/2 and n matrices, as ``python -m benchmarks`` takes it."""
    return measure_ceiling(n, threads)["int8_matmulinteger"]


def main(argv: list[str] | None = None) -> int:
    """Measure, write json and md, print the md."""
    parser = argparse.ArgumentParser(prog="python -m studies.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, short timings, written to build/")
    parser.add_argument("--out", type=Path, default=None, help="output stem (default: results/kernels-<machine>)")
    args = parser.parse_args(argv)
    machine = describe()
    rows, shapes, budget, n = ROWS, SHAPES, 0.3, 2048  # the ceiling as `python -m benchmarks` measures it
    if args.quick:
        rows, shapes, budget, n = (4, 40), ((128, 256),), 0.01, 256
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    before = ceiling(n, args.threads)
    results = measure(args.threads, rows, shapes, budget)
    after = ceiling(n, args.threads)
    doc = {
        "machine": machine,
        "libraries": library_versions(),
        "created": created,
        "threads": args.threads,
        # Best of a measurement before and after the cases: this class of host drifts by tens of percent.
        "ceiling_gops": max(before, after),
        "ceiling_before_after_gops": [before, after],
        "results": results,
    }
    stem = args.out or ((QUICK_OUT if args.quick else DEFAULT_OUT) / f"kernels-{machine['name']}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
