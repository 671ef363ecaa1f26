"""This project's runtime: ``runtime.load(provider=..., precision=..., threads=...)``."""

from __future__ import annotations

import numpy as np

from benchmarks.config import Paths
from benchmarks.peers import Peer
from benchmarks.systems import System


def load(system: System, paths: Paths, threads: int) -> Peer:
    """The artifact's graph of ``system.precision`` on the CPU (or CUDA) execution provider."""
    import runtime

    encoder = runtime.load(paths.artifact, provider=system.device, precision=system.precision, threads=threads)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch_size)

    graph = paths.artifact / encoder.manifest.variants[encoder.precision].graph.file
    notes = {"graph": graph.name, "max_seq_length": encoder.max_seq_length, "intra_op_threads": threads}
    return Peer(embed, (graph,), notes)
