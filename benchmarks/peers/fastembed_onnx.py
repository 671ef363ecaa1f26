"""fastembed on the sentence-transformers dynamic int8 graph, registered with ``TextEmbedding.add_custom_model``.

fastembed cannot download here, so it reads the ``st-onnx`` cache folder through ``specific_model_path``. It takes its
truncation length from the folder's tokenizer files (not from sentence-transformers' max_seq_length); the length it
ends up with is recorded in the notes, never corrected.
"""

from __future__ import annotations

import numpy as np

from benchmarks.config import Paths, Settings
from benchmarks.peers import Peer, st_onnx
from benchmarks.systems import System
from runtime.artifact import DIMENSION

MODEL_NAME = "bench/minilm-l6-stsb-int8"


def prepare(system: System, paths: Paths, settings: Settings) -> None:
    """fastembed reuses the sentence-transformers int8 export."""
    st_onnx.prepare(system, paths, settings)


def load(system: System, paths: Paths, threads: int) -> Peer:
    """``TextEmbedding`` with mean pooling + normalisation, ``threads`` onnxruntime threads, CPU provider only."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    folder = st_onnx.model_folder(paths)
    model_file = f"onnx/{st_onnx.int8_file()}"
    TextEmbedding.add_custom_model(
        model=MODEL_NAME,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf=MODEL_NAME),
        dim=DIMENSION,
        model_file=model_file,
    )
    model = TextEmbedding(
        MODEL_NAME,
        threads=threads,
        providers=["CPUExecutionProvider"],
        specific_model_path=str(folder),
        local_files_only=True,
    )

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.stack(list(model.embed(texts, batch_size=batch_size))).astype(np.float32, copy=False)

    truncation = model.model.tokenizer.truncation or {}
    notes = {"graph": model_file, "max_seq_length": truncation.get("max_length"), "threads": threads}
    return Peer(embed, (folder / model_file,), notes)
