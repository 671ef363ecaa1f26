"""fastembed, on the graph fastembed itself picks for this model, registered with ``TextEmbedding.add_custom_model``.

fastembed's catalogue serves sentence-transformers/all-MiniLM-L6-v2 as one fp32 ONNX export (``model.onnx`` of
Qdrant/all-MiniLM-L6-v2-onnx, 0.09 GB), the same file on every CPU: it has no int8 variant and no per-CPU choice for
this model. So fastembed runs the fp32 ``onnx/model.onnx`` that sentence-transformers exports from the fine-tuned
checkpoint (the ``st-onnx`` cache folder), read through ``specific_model_path`` since nothing may download here.
fastembed takes its truncation length from the folder's tokenizer files (not from sentence-transformers'
max_seq_length); the length it ends up with is recorded in the notes, never corrected.
"""

from __future__ import annotations

import numpy as np

from benchmarks.config import Paths, Settings
from benchmarks.peers import Peer, st_onnx
from benchmarks.systems import System
from runtime.artifact import DIMENSION

MODEL_NAME = "bench/minilm-l6-stsb"


def prepare(system: System, paths: Paths, settings: Settings) -> None:
    """fastembed reads the sentence-transformers export's fp32 graph."""
    st_onnx.prepare(system, paths, settings)


def load(system: System, paths: Paths, threads: int) -> Peer:
    """``TextEmbedding`` with mean pooling + normalisation, ``threads`` onnxruntime threads, CPU provider only."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    folder = st_onnx.model_folder(paths)
    model_file = st_onnx.graph_file(paths, "fp32")
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
