"""sentence-transformers ``backend="onnx"``: its own export, and its ``export_dynamic_quantized_onnx_model`` int8 with
the preset for this CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.cache import cached, stamp
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


def model_folder(paths: Paths) -> Path:
    """The checkpoint saved with ``onnx/model.onnx`` and the dynamic int8 graph of this CPU's preset beside it."""
    return paths.cache / FOLDER


def prepare(system: System, paths: Paths, settings: Settings) -> None:
    """Export the fp32 and dynamic int8 graphs as sentence-transformers' docs describe; reused while the checkpoint
    and this CPU's preset are unchanged (a cache built on another CPU class is rebuilt, not reused)."""
    preset = quantization_target()
    cached(
        model_folder(paths),
        paths.checkpoint,
        lambda tmp: _export(paths.checkpoint, tmp, preset),
        {"int8_preset": preset},
    )


def _export(checkpoint: Path, out: Path, preset: str) -> dict[str, object]:
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    model = SentenceTransformer(str(checkpoint), device="cpu", backend="onnx")
    model.save(str(out))
    before = set((out / "onnx").glob("*.onnx"))
    export_dynamic_quantized_onnx_model(model, preset, str(out))
    # sentence-transformers names the file after the preset's weight type: model_qint8_avx512_vnni.onnx, but
    # model_quint8_avx2.onnx (uint8 weights). Record what it wrote rather than predicting the name.
    written = sorted(set((out / "onnx").glob("*.onnx")) - before)
    if len(written) != 1:
        raise RuntimeError(f"export_dynamic_quantized_onnx_model({preset!r}) wrote {[p.name for p in written]}")
    return {"fp32": f"onnx/{FP32_FILE}", "int8": f"onnx/{written[0].name}", "int8_preset": preset}


def graph_file(paths: Paths, precision: str) -> str:
    """The graph of ``precision`` inside :func:`model_folder`, e.g. ``onnx/model_quint8_avx2.onnx``."""
    if precision == "fp32":
        return f"onnx/{FP32_FILE}"
    record = stamp(model_folder(paths)) or {}
    if record.get("int8_preset") != quantization_target():
        raise RuntimeError(
            f"{model_folder(paths)} holds no int8 graph for preset {quantization_target()!r} (run prepare first)"
        )
    return str(record["int8"])


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
    graph = graph_file(paths, system.precision)
    kwargs = {
        "file_name": Path(graph).name,
        "provider": "CPUExecutionProvider",
        "session_options": session_options(threads),
    }
    model = SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs=kwargs)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float32)

    notes = {"graph": graph, "max_seq_length": model.max_seq_length, "intra_op_threads": threads}
    return Peer(embed, (folder / graph,), notes)
