"""The OpenVINO backend: the artifact's own ONNX graph compiled by OpenVINO's CPU plugin (the ``openvino`` extra).

openvino is imported only when this backend is built, never by ``import runtime``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import INPUT_NAMES, OUTPUT_NAME
from runtime.backends import OPENVINO_INSTALL
from runtime.cpu import restricted_cores
from runtime.errors import ArtifactError, BackendUnavailable

# OpenVINO's compiled-model cache (its CACHE_DIR): later loads import the compiled blob (~24 MB) instead of converting
# and compiling the ONNX graph again (measured 0.2 s instead of 0.5 s here). OpenVINO keys each blob by the graph's
# content, the settings and its own version. Default: the user's cache folder; the variable names another folder,
# and an empty value turns the cache off. An unwritable folder also leaves it off.
CACHE_ENV = "MINILM_OPENVINO_CACHE_DIR"

# Inference precision of the float parts (attention, layer norms, GELU); OpenVINO's CPU default is bf16 where the CPU
# has it. f32 is the default here: with bf16 the shipped int8 graph's worst STS-B dev vector fell to cosine 0.98997
# to PyTorch fp32, under the 0.99 gate (f32: 0.9925, as onnxruntime's). bf16 is opt-in through this variable
# (measured 1.1-1.25x faster than f32 on a Zen 4 EPYC at batch 32).
PRECISION_ENV = "MINILM_OPENVINO_INFERENCE_PRECISION"
PRECISIONS = {"f32": "f32", "bf16": "bf16"}

# Latency hint: one stream whose threads all work on each request, as onnxruntime's intra-op pool does. Pinning off:
# pinned threads would fight other processes on a shared machine, and pinning gained nothing measurable here.
BASE_CONFIG: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}


def inference_precision() -> str:
    """The inference precision asked of OpenVINO: f32, or bf16 when ``MINILM_OPENVINO_INFERENCE_PRECISION=bf16``."""
    value = os.environ.get(PRECISION_ENV, "f32").strip().lower() or "f32"
    if value not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV} must be one of {sorted(PRECISIONS)}, got {value!r}")
    return PRECISIONS[value]


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as err:
        raise BackendUnavailable(f"backend='openvino' needs the openvino package: {OPENVINO_INSTALL} ({err})") from err
    return openvino


class OpenVINORunner:
    """A compiled model and a pool of infer requests (one per concurrent caller): thread-safe as the Encoder is.

    Each run is split into groups of rows with the same token count, and each group runs without padding: with
    padding, OpenVINO's attention and pooling reductions change order with the padded length, and the int8 graph's
    per-token activation quantisation turns those last-bit differences into 1e-3 differences in the vector
    (measured: 16 of 1,000 STS-B dev texts moved by more than 1e-4, up to 4.7e-3). Unpadded, a text's vector is
    the same alone or in any batch.
    """

    equal_lengths = True

    def __init__(self, graph: Path, dimension: int, threads: int | None) -> None:
        ov = _import_openvino()
        self._ov = ov
        core = ov.Core()
        cache_dir = _cache_dir()
        if cache_dir:
            core.set_property({"CACHE_DIR": cache_dir})
        if threads is None:
            # OpenVINO sizes its pool from the machine's cores; a process held to fewer gets one thread per its cores.
            threads = restricted_cores()
        config = {**BASE_CONFIG, "INFERENCE_PRECISION_HINT": inference_precision()}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        started = time.perf_counter()
        try:
            self._compiled = core.compile_model(str(graph), "CPU", config)
        except Exception as err:  # OpenVINO raises its own RuntimeError subclasses
            raise ArtifactError(f"{graph}: OpenVINO cannot compile the graph: {err}") from err
        self.compile_seconds = time.perf_counter() - started
        self._check_contract(graph, dimension)
        self._dimension = dimension
        self._config = config
        self._cache_dir = cache_dir
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._create_lock = threading.Lock()

    def _check_contract(self, graph: Path, dimension: int) -> None:
        ov = self._ov
        names = {i.get_any_name(): i for i in self._compiled.inputs}
        if set(names) != set(INPUT_NAMES):
            raise ArtifactError(f"{graph}: graph inputs {sorted(names)}, expected {list(INPUT_NAMES)}")
        for name in INPUT_NAMES:
            if names[name].get_element_type() != ov.Type.i64:
                raise ArtifactError(f"{graph}: input {name!r} is {names[name].get_element_type()}, expected i64")
        outputs = {o.get_any_name(): o for o in self._compiled.outputs}
        if OUTPUT_NAME not in outputs:
            raise ArtifactError(f"{graph}: graph outputs {sorted(outputs)}, expected {OUTPUT_NAME!r}")
        shape = outputs[OUTPUT_NAME].get_partial_shape()
        if shape.rank.get_length() != 2 or not shape[1].is_static or shape[1].get_length() != dimension:
            raise ArtifactError(f"{graph}: output {OUTPUT_NAME!r} has shape {shape}, expected [batch, {dimension}]")
        self._output = outputs[OUTPUT_NAME]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embed a batch whose masks are 1 on a prefix of each row (as the Encoder pads) -> float32 (n, dim)."""
        lengths = attention_mask.sum(axis=1)
        out = np.empty((len(lengths), self._dimension), dtype=np.float32)
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            with self._create_lock:
                request = self._compiled.create_infer_request()
        try:
            for length in np.unique(lengths):
                rows = np.flatnonzero(lengths == length)
                ids = np.ascontiguousarray(input_ids[rows, :length])
                mask = np.ascontiguousarray(attention_mask[rows, :length])
                request.infer({INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask}, share_inputs=True)
                out[rows] = request.get_tensor(self._output).data
        finally:
            self._requests.put(request)
        return out

    def info(self) -> dict[str, object]:
        """Engine, version, the compiled model's effective settings and how long compiling took."""
        compiled = self._compiled
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        info: dict[str, object] = {
            "backend": "openvino",
            "engine": f"openvino {self._ov.get_version()}",
            "inference_precision": {"bf16": "bf16", "f32": "f32", "f16": "fp16"}.get(precision, precision),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "config": {
                **{k: _plain(v) for k, v in self._config.items()},
                "NUM_STREAMS": int(compiled.get_property("NUM_STREAMS")),
            },
            "compile_seconds": round(self.compile_seconds, 3),
            "cache_dir": self._cache_dir,
            "loaded_from_cache": bool(compiled.get_property("LOADED_FROM_CACHE")) if self._cache_dir else False,
            "batches": "rows of one token length per inference (no padding)",
        }
        return info


def _cache_dir() -> str | None:
    """The compiled-model cache folder (created if needed), or None when turned off or not writable."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        value = os.path.join(base, "minilm-stsb-onnx", "openvino")
    if not value.strip():
        return None
    try:
        os.makedirs(value, exist_ok=True)
    except OSError:
        return None
    return value if os.access(value, os.W_OK | os.X_OK) else None


def _plain(value: object) -> object:
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
