"""studies.profile: op-type shares of the measured runs only, over the runtime's own batches."""

from __future__ import annotations

from pathlib import Path

import pytest

import runtime

profile = pytest.importorskip("studies.profile")


def test_profile_counts_only_the_measured_pass(default_dir: Path) -> None:
    encoder = runtime.load(default_dir, provider="cpu", precision="int8", threads=1)
    work = profile.Workload("dev b32", [f"sentence number {i} about a cat on a mat" for i in range(40)], 32)
    feeds = list(profile.feeds(encoder, work))
    assert [f["input_ids"].shape[0] for f in feeds] == [32, 8]  # the runtime's batching: 40 texts at batch 32
    graph = default_dir / encoder.manifest.variants["int8"].graph.file
    found = profile.profile(graph, feeds, threads=1)
    assert found["runs"] == 2
    # Sequential execution on one thread: the kernels of the measured pass fit inside its wall time; counting the
    # warm-up pass as well would roughly double the kernel time.
    assert found["kernel_ms"] <= found["wall_ms"]
    assert sum(found["op_share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert next(iter(found["op_share"])) == "MatMulIntegerToFloat"  # the int8 GEMMs dominate
