"""studies.kernels: its graphs compute the GEMM they claim to time, and a quick run writes its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the 'bench' extra")

from studies import kernels


def test_gemm_graph_is_the_exact_integer_product() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    xq = rng.integers(1, 256, (5, 64)).astype(np.uint8)
    q, scale = kernels.int8_weights(w)
    assert np.abs(q).max() <= 64
    got = kernels.session(kernels.gemm_graph(w), 1).run(None, {"x": xq})[0]
    want = ((xq.astype(np.int64) - 128) @ q.astype(np.int64)) * scale.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_quick_run_reports_every_case_with_graphs_that_match_float_math(tmp_path: Path) -> None:
    assert kernels.main(["--quick", "--threads", "1", "--out", str(tmp_path / "k")]) == 0
    doc = json.loads((tmp_path / "k.json").read_text())
    results = doc["results"]
    assert [(g["k"], g["n"], g["m"]) for g in results["gemm"]] == [(128, 256, 4), (128, 256, 40)]
    for row in results["chain_vs_matmulnbits"]:
        # int8 weights and activations: a few percent of the largest output at most; a mis-built chain (wrong zero
        # point or scale) is off by orders of magnitude.
        for key in ("chain_rel_err", "matmulnbits_b32_rel_err", "matmulnbits_b128_rel_err"):
            assert row[key] < 0.05, (key, row)
    assert set(results["dispatch"]) == {"4", "40"}
    md = (tmp_path / "k.md").read_text()
    assert md.count("| 128 x 256 |") == 4 and "per extra node" in md
