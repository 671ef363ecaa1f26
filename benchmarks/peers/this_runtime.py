"""This project's runtime: ``runtime.load(provider=..., precision=..., threads=..., backend=...)``."""

from __future__ import annotations

import numpy as np

from benchmarks.config import Paths
from benchmarks.peers import Peer
from benchmarks.systems import System


def load(system: System, paths: Paths, threads: int) -> Peer:
    """The artifact's graph of ``system.precision`` on ``system.backend`` (onnxruntime on the CPU or CUDA execution
    provider, or OpenVINO); precision "auto" with backend "auto" is ``runtime.load()``'s own choice."""
    import runtime

    if system.precision == "auto":
        encoder = runtime.load(paths.artifact, threads=threads)
    else:
        backend = system.backend or "onnxruntime"
        encoder = runtime.load(
            paths.artifact, provider=system.device, precision=system.precision, threads=threads, backend=backend
        )

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch_size)

    graph = paths.artifact / encoder.manifest.variants[encoder.precision].graph.file
    notes = {
        "graph": graph.name,
        "max_seq_length": encoder.max_seq_length,
        "intra_op_threads": threads,
        "backend": encoder.backend,
        "inference_precision": encoder.info["inference_precision"],
    }
    return Peer(embed, (graph,), notes)
