"""The machine's ceiling: measured GEMM rates (fp32 numpy, int8 onnxruntime) and the model's FLOPs per text.

Roofline here means: if every FLOP of the model ran at the best GEMM rate this machine reached, how many texts per
second would that be. A system's throughput as a share of that says how much room its kernels and overheads leave.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# all-MiniLM-L6-v2: 6 layers, hidden 384, feed-forward 1536.
LAYERS = 6
HIDDEN = 384
FFN = 1536
DENSE_PARAMS = LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN)  # Q, K, V, O + two feed-forward matrices
REPEATS = 5


def flops_per_text(tokens: int) -> float:
    """2 FLOPs per dense weight per token, plus attention's QK^T and AV: 4 * T^2 * hidden per layer."""
    return 2.0 * DENSE_PARAMS * tokens + LAYERS * 4.0 * tokens * tokens * HIDDEN


def mean_flops(token_counts: list[int], max_tokens: int) -> float:
    """Mean FLOPs per text of a workload, texts truncated at ``max_tokens``, no padding counted."""
    return float(np.mean([flops_per_text(min(t, max_tokens)) for t in token_counts]))


def _best_rate(run: Callable[[], object], ops: float, repeats: int) -> float:
    """Best of ``repeats`` timed calls after one warm-up, as giga-ops per second."""
    run()
    best = min(_timed(run) for _ in range(repeats))
    return ops / best / 1e9


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(n: int, threads: int) -> dict[str, float]:
    """Best GEMM rates (giga-ops/s) at sizes n/2 and n: numpy fp32, and onnxruntime fp32 MatMul and MatMulInteger
    (the kernel behind the runtime's int8 MatMulIntegerToFloat). The onnxruntime rates need the ``onnx`` package to
    build their graphs and are left out without it.
    """
    rates: dict[str, float] = {}
    for size in (n // 2, n):
        found = {"fp32_numpy": fp32_gemm_gflops(size)}
        if importlib.util.find_spec("onnx") is not None:
            found.update(onnxruntime_gemm_gops(size, threads))
        rates = {k: max(v, rates.get(k, 0.0)) for k, v in found.items()}
    return rates


def fp32_gemm_gflops(n: int) -> float:
    """numpy (its BLAS) float32 n x n x n matmul rate; BLAS threads come from the environment."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    return _best_rate(lambda: a @ b, 2.0 * n**3, REPEATS)


def onnxruntime_gemm_gops(n: int, threads: int) -> dict[str, float]:
    """onnxruntime rates on n x n x n with a constant right-hand side, as in the models' dense layers: fp32 MatMul
    and MatMulInteger (u8 x s8 -> s32)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    rng = np.random.default_rng(0)
    a_u8 = rng.integers(0, 255, (n, n), dtype=np.uint8)
    a_f32 = rng.standard_normal((n, n), dtype=np.float32)
    b_f32 = rng.standard_normal((n, n), dtype=np.float32)
    b_i8 = rng.integers(-127, 127, (n, n), dtype=np.int8)
    rates = {}
    for name, graph, feed in (
        ("fp32_onnxruntime", _graph("MatMul", b_f32, np.float32).SerializeToString(), {"A": a_f32}),
        ("int8_matmulinteger", _graph("MatMulInteger", b_i8, np.uint8).SerializeToString(), {"A": a_u8}),
    ):
        session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        rates[name] = _best_rate(lambda s=session, f=feed: s.run(None, f), 2.0 * n**3, REPEATS)
    return rates


def _graph(op: str, b: np.ndarray, a_type: type) -> Any:
    """``Y = op(A, B)`` with ``B`` a constant initializer."""
    from onnx import helper, numpy_helper

    n = b.shape[0]
    out_type = np.int32 if op == "MatMulInteger" else np.float32
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])],
        op.lower(),
        [helper.make_tensor_value_info("A", helper.np_dtype_to_tensor_dtype(np.dtype(a_type)), [n, n])],
        [helper.make_tensor_value_info("Y", helper.np_dtype_to_tensor_dtype(np.dtype(out_type)), [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    # IR version pinned: a newer onnx stamps its own (onnx 1.23: IR 14), which older onnxruntime builds refuse
    # (1.30 reads up to IR 13); opset 21 needs IR 10.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
