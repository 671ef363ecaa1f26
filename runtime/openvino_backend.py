"""The OpenVINO backend: the artifact's graph in its OpenVINO form (:mod:`runtime.openvino_form`), compiled by
OpenVINO's CPU plugin (the ``openvino`` extra).

openvino and onnx are imported only when this backend is built, never by ``import runtime``.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import INPUT_NAMES, OUTPUT_NAME, sha256_file
from runtime.cpu import restricted_cores
from runtime.errors import ArtifactError, BackendUnavailable
from runtime.install import OPENVINO_INSTALL

# The OpenVINO form of each graph and OpenVINO's compiled model (its CACHE_DIR) are kept here, so a later load
# skips the rewrite, the conversion and the compilation (~2 s) and imports the compiled blob. The form's file is named
# by the source graph's sha256 and the rewrite's version; OpenVINO keys each blob by the model, the settings and its
# own version. Default: the user's cache folder; the variable names another folder, and an empty value turns the
# cache off. An unwritable folder also leaves it off.
CACHE_ENV = "MINILM_OPENVINO_CACHE_DIR"

# Latency hint: one stream whose threads all work on each request, as onnxruntime's intra-op pool does. Pinning off:
# pinned threads would fight other processes on a shared machine, and pinning gained nothing measurable here.
BASE_CONFIG: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
PRECISION_HINTS = {"bf16": "bf16", "f32": "f32"}
TOKENS_PER_RUN = 4096


def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as err:
        raise BackendUnavailable(f"the OpenVINO backend needs the {name} package: {OPENVINO_INSTALL} ({err})") from err


class OpenVINORunner:
    """A compiled model and a pool of infer requests (one per concurrent caller): thread-safe as the Encoder is.

    Batches are padded as onnxruntime's are: the OpenVINO form has no per-token quantisation to amplify the last-bit
    differences padding makes in attention and pooling, so a text's vector alone and inside any padded batch stay
    within the bf16 gate (cosine >= 0.9999; measured in docs/decisions.md, tested in tests/test_openvino.py).
    """

    equal_lengths = False
    cuts: tuple[int, ...] = ()

    def tokens_per_run(self, width: int) -> int | None:
        """Larger runs than onnxruntime's: OpenVINO's fused attention and AMX GEMMs gain from them (200-256-token
        passages, 2 threads, AMX Xeon, interleaved: 4,096-token runs 1.07x the 1,024-token ones; 8,192 no further)."""
        return TOKENS_PER_RUN

    def __init__(self, graph: Path, dimension: int, threads: int | None, precision: str) -> None:
        if precision not in PRECISION_HINTS:
            raise ValueError(
                f"OpenVINO inference precision must be one of {sorted(PRECISION_HINTS)}, got {precision!r}"
            )
        ov = _import("openvino")
        self._ov = ov
        core = ov.Core()
        cache_dir = _cache_dir(precision)
        if cache_dir:
            core.set_property({"CACHE_DIR": cache_dir})
        if threads is None:
            # OpenVINO sizes its pool from the machine's cores; a process held to fewer gets one thread per its cores.
            threads = restricted_cores()
        config = {**BASE_CONFIG, "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        started = time.perf_counter()
        try:
            model = _form(core, graph, cache_dir)
            self._compiled = core.compile_model(model, "CPU", config)
        except (BackendUnavailable, ArtifactError):
            raise
        except Exception as err:  # onnx and OpenVINO raise their own exception types
            raise ArtifactError(f"{graph}: OpenVINO cannot compile the graph's OpenVINO form: {err}") from err
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
        """Embed a padded batch -> float32 (n, dim)."""
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            with self._create_lock:
                request = self._compiled.create_infer_request()
        try:
            feeds = {INPUT_NAMES[0]: input_ids, INPUT_NAMES[1]: attention_mask}
            request.infer(feeds, share_inputs=True)
            return np.array(request.get_tensor(self._output).data, dtype=np.float32)
        finally:
            self._requests.put(request)

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
            "graph_form": f"OpenVINO form v{_form_version()} (runtime.openvino_form)",
        }
        return info


def _form_version() -> int:
    from runtime.openvino_form import VERSION

    return VERSION


def _form(core: Any, graph: Path, cache_dir: str | None) -> Any:
    """The graph's OpenVINO form as an OpenVINO model, or the path of its cached file (which lets OpenVINO's own
    cache import the compiled blob without reading the model again)."""
    from runtime.openvino_form import VERSION, openvino_form

    if cache_dir:
        key = hashlib.sha256(f"{sha256_file(graph)}-{VERSION}".encode()).hexdigest()[:32]
        path = Path(cache_dir) / f"form-{key}.onnx"
        if not path.is_file():
            onnx = _import("onnx")  # only to write the form: a cached load never imports it (~11 MiB)
            form = openvino_form(onnx.load(str(graph)))
            partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                onnx.save(form, str(partial))
                os.replace(partial, path)  # whole or absent, even with several processes writing it at once
            finally:
                partial.unlink(missing_ok=True)
        return str(path)
    return core.read_model(openvino_form(_import("onnx").load(str(graph))).SerializeToString())


def _cache_dir(precision: str) -> str | None:
    """The cache folder for one inference precision (created if needed), or None when turned off or not writable.

    One folder per precision: OpenVINO 2026.4 keys a blob compiled from a model file by the file and not by
    INFERENCE_PRECISION_HINT, and a blob compiled for f32 imported under a bf16 request gave NaN and zero vectors
    (tested: tests/test_openvino.py::test_compiled_model_cache)."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        value = os.path.join(base, "minilm-stsb-onnx", "openvino")
    if not value.strip():
        return None
    value = os.path.join(value, precision)
    try:
        os.makedirs(value, exist_ok=True)
    except OSError:
        return None
    return value if os.access(value, os.W_OK | os.X_OK) else None


def _plain(value: object) -> object:
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
