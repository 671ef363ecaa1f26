"""sentence-transformers ``backend="onnx"``: its own export, and its ``export_dynamic_quantized_onnx_model`` int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.cache import cached
from benchmarks.config import Paths, Settings
from benchmarks.machine import cpu_flags
from benchmarks.peers import Peer
from benchmarks.systems import System

FOLDER = "st-onnx"
FP32_FILE = "model.onnx"


def quantization_target() -> str:
    """The best of sentence-transformers' dynamic int8 presets for this CPU."""
    flags = set(cpu_flags())
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "arm64"


def int8_file() -> str:
    """File name sentence-transformers gives the dynamic int8 graph (``onnx/model_qint8_<preset>.onnx``)."""
    return f"model_qint8_{quantization_target()}.onnx"


def model_folder(paths: Paths) -> Path:
    """The checkpoint saved with ``onnx/model.onnx`` and ``onnx/model_qint8_<preset>.onnx`` beside it."""
    return paths.cache / FOLDER


def prepare(system: System, paths: Paths, settings: Settings) -> None:
    """Export (once per checkpoint) the fp32 and dynamic int8 graphs, as sentence-transformers' docs describe."""
    cached(model_folder(paths), paths.checkpoint, lambda tmp: _export(paths.checkpoint, tmp))


def _export(checkpoint: Path, out: Path) -> dict[str, object]:
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    model = SentenceTransformer(str(checkpoint), device="cpu", backend="onnx")
    model.save(str(out))
    export_dynamic_quantized_onnx_model(model, quantization_target(), str(out))
    return {"fp32": f"onnx/{FP32_FILE}", "int8": f"onnx/{int8_file()}", "int8_preset": quantization_target()}


def session_options(threads: int) -> object:
    """onnxruntime's own thread knob: ``threads`` intra-op threads, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def load(system: System, paths: Paths, threads: int) -> Peer:
    """The cached export loaded through ``SentenceTransformer(..., backend="onnx")`` on the CPU provider."""
    from sentence_transformers import SentenceTransformer

    folder = model_folder(paths)
    file_name = FP32_FILE if system.precision == "fp32" else int8_file()
    kwargs = {"file_name": file_name, "provider": "CPUExecutionProvider", "session_options": session_options(threads)}
    model = SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs=kwargs)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float32)

    notes = {"graph": f"onnx/{file_name}", "max_seq_length": model.max_seq_length, "intra_op_threads": threads}
    return Peer(embed, (folder / "onnx" / file_name,), notes)
