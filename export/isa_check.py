"""Check an int8 artifact against its exact-integer reference on the CPU this process runs on.

    python -m export.isa_check [--artifact DIR] [--reference DIR] [--texts N] [--long-tokens N] [--threads N]
                               [--golden FILE]

CI runs it natively and under ``qemu-x86_64 -cpu Haswell`` (AVX2) and ``-cpu Nehalem`` (SSE4.1), so the int8
kernels of instruction sets other than the CI machine's own are exercised too. Prints one JSON line; exits 1 when
the int8 graph differs from the reference by more than ``--tolerance`` in any dimension, or from a golden vector by
more than 1e-4.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import runtime
from export.data import dev_sentences
from export.quantize import SIGNED_ZERO_POINT, weight_levels
from export.reference import reference_artifact
from runtime.artifact import default_artifact_dir
from runtime.cpu import isa_class

# Long enough to reach the 256-token truncation: the longest GEMMs (K = 1,536 over 256 rows) run on it.
LONG_PHRASE = "the quick brown fox jumps over the lazy dog near the river bank"  # 13 tokens
LONG_TEXT = " ".join([LONG_PHRASE] * 30)
GOLDEN_TOLERANCE = 1e-4
# Short texts only: a 256-token text's float attention rounds differently on AVX2 and AVX-512 (docs/int8.md), which
# per-token requantisation amplifies to ~4e-3; the exact-reference check above covers long texts on every CPU.
GOLDEN_TEXTS = ["A man is playing a guitar.", "Iran hopes nuclear talks will yield 'roadmap'", ""]


def check_texts(count: int, long_tokens: int = 256) -> list[str]:
    """The first ``count`` STS-B dev sentences plus one text of about ``long_tokens`` tokens (at most 256: it is
    truncated there)."""
    repeats = max(1, -(-(long_tokens - 2) // 13))
    return [*dev_sentences()[:count], " ".join([LONG_PHRASE] * repeats)]


def run(
    artifact: Path,
    reference: Path,
    count: int,
    tolerance: float,
    golden: Path | None,
    long_tokens: int = 256,
    threads: int | None = None,
) -> dict[str, object]:
    """Encode the check texts with the int8 graph and its reference; compare; return the findings."""
    texts = check_texts(count, long_tokens)
    start = time.perf_counter()
    encoder = runtime.load(artifact, provider="cpu", precision="int8", threads=threads, backend="onnxruntime")
    int8 = encoder.encode(texts)
    exact = runtime.load(reference, provider="cpu", precision="int8", threads=threads, backend="onnxruntime")
    diff = float(np.abs(int8 - exact.encode(texts)).max())
    result: dict[str, object] = {
        "isa_class_reported": isa_class(),  # qemu-user passes the host's /proc/cpuinfo through: see --label
        "probe_error_full_range_weights": saturation_probe(127),
        "probe_error_graph_weights": max(saturation_probe(weight_levels(zp), zp) for zp in (SIGNED_ZERO_POINT, 0)),
        "texts": len(texts),
        "long_tokens": len(encoder.tokenize(texts[-1:])[0]),
        "max_abs_diff_to_exact": diff,
        "tolerance": tolerance,
    }
    result["ok"] = diff <= tolerance and result["probe_error_graph_weights"] == 0.0
    if golden is not None:
        data = json.loads(golden.read_text())
        worst = max(
            float(np.abs(encoder.encode(text)[: len(dims)] - np.asarray(dims, np.float32)).max())
            for text, dims in data["vectors"].items()
        )
        result["max_abs_diff_to_golden"] = worst
        result["ok"] = bool(result["ok"]) and worst <= GOLDEN_TOLERANCE
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def saturation_probe(weight: int, zero_point: int = SIGNED_ZERO_POINT, k: int = 64) -> float:
    """Largest error of one integer GEMM with every activation at its largest (zero_point + 127) and every weight
    ``weight``, against the exact result.

    At zero point 128 (activations up to 255), full-range weights (127) saturate the int16 pair sums of the non-VNNI
    x86 kernels and the graph's 64 cannot; at zero point 0 (activations up to 127), 127 cannot either. A non-zero
    error for 127 at zero point 128 shows that the run really reached such a kernel.
    """
    import onnxruntime as ort

    from export.deps import require

    onnx = require("onnx")
    helper, tp, nh = onnx.helper, onnx.TensorProto, onnx.numpy_helper
    node = helper.make_node("MatMulIntegerToFloat", ["q", "w", "one", "cols", "zp"], ["y"], domain="com.microsoft")
    inits = [
        nh.from_array(np.full((k, 8), weight, np.int8), "w"),
        nh.from_array(np.array(1.0, np.float32), "one"),
        nh.from_array(np.ones(8, np.float32), "cols"),
        nh.from_array(np.array(zero_point, np.uint8), "zp"),
    ]
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("q", tp.UINT8, [4, k])],
        [helper.make_tensor_value_info("y", tp.FLOAT, [4, 8])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"q": np.full((4, k), zero_point + 127, np.uint8)})
    return float(np.abs(y.astype(np.float64) - 127.0 * weight * k).max())


def write_golden(artifact: Path, reference: Path, texts: list[str], path: Path, dims: int = 8) -> None:
    """Record the first ``dims`` dimensions of each text's vector, computed by the exact reference, into ``path``."""
    from runtime.artifact import Precision, read_manifest

    encoder = runtime.load(reference, provider="cpu", precision="int8", backend="onnxruntime")
    data = {
        "graph_sha256": read_manifest(artifact).variants[Precision.INT8].graph.sha256,
        "computed_by": "export.reference (exact-integer float twin of the int8 graph); regenerate with "
        "python -m export.isa_check --write-golden tests/golden.json",
        "vectors": {t: [round(float(x), 6) for x in encoder.encode(t)[:dims]] for t in texts},
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.isa_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=None, help="artifact folder (default: the shipped model)")
    parser.add_argument("--reference", type=Path, default=None, help="its reference artifact (default: build it)")
    parser.add_argument("--texts", type=int, default=24, help="dev sentences to check (plus one long text)")
    parser.add_argument("--long-tokens", type=int, default=256, help="tokens of the long text (default 256)")
    parser.add_argument("--threads", type=int, default=None, help="threads of each session (default: one per core)")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--golden", type=Path, default=None, help="golden.json to check as well")
    parser.add_argument("--label", default=None, help="name of the (emulated) CPU, recorded in the output")
    parser.add_argument("--write-golden", type=Path, default=None, help="(re)write this golden.json from the reference")
    args = parser.parse_args(argv)
    artifact = args.artifact or default_artifact_dir()
    with tempfile.TemporaryDirectory(prefix="exact-") as tmp:
        reference = args.reference or reference_artifact(artifact, Path(tmp))
        if args.write_golden is not None:
            write_golden(artifact, reference, GOLDEN_TEXTS, args.write_golden)
        result = run(artifact, reference, args.texts, args.tolerance, args.golden, args.long_tokens, args.threads)
    result["label"] = args.label or isa_class()
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
