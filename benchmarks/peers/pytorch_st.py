"""The baseline: sentence-transformers on PyTorch, fp32 (CPU, or CUDA where a GPU exists)."""

from __future__ import annotations

import numpy as np

from benchmarks.config import Paths
from benchmarks.peers import Peer
from benchmarks.systems import System


def load(system: System, paths: Paths, threads: int) -> Peer:
    """The fine-tuned checkpoint as users load it; torch's intra-op pool bounded to ``threads``."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(paths.checkpoint), device=system.device)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float32)

    weights = tuple(sorted(paths.checkpoint.glob("*.safetensors")))
    notes = {
        "graph": ", ".join(w.name for w in weights),
        "max_seq_length": model.max_seq_length,
        "torch_threads": torch.get_num_threads(),
    }
    return Peer(embed, weights, notes)
